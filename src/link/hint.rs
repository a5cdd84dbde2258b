//! What to do about a link that did not open: the fix, named for the user. The engine only
//! sends an errno back, so the side that asked works out the fix from the locator.

use std::path::Path;

/// The fix for `errno` from opening the link `vnl` names, when there is one to name.
pub fn fix(vnl: &str, errno: i32) -> Option<String> {
    if vnl.is_empty() || vnl.starts_with("mem://") {
        return None;
    }
    if let Some(name) = vnl
        .strip_prefix("tap://")
        .or_else(|| vnl.strip_prefix("tun://"))
    {
        return (errno == libc::EPERM || errno == libc::EACCES).then(|| {
            format!(
                "creating {name} on /dev/net/tun needs CAP_NET_ADMIN: run as root, in a user \
                 namespace (unshare -rn), or give a device made for you (ip tuntap add {name} \
                 mode tap user $USER)"
            )
        });
    }
    if let Some(dir) = super::switch::native(vnl) {
        let ctl = Path::new(dir).join("ctl");
        let start = format!(
            "start one: vde_switch -s {dir} (Debian package vde2) or vde_plug null:// \
             switch://{dir} (package vdeplug)"
        );
        return match errno {
            libc::ENOENT | libc::ENOTDIR if !Path::new(dir).is_dir() => Some(format!(
                "no VDE switch at {dir}: looked for its control socket {}, and the directory \
                 does not exist; {start}",
                ctl.display()
            )),
            libc::ENOENT | libc::ENOTDIR => Some(format!(
                "no VDE switch at {dir}: looked for its control socket {}, which does not \
                 exist; {start}",
                ctl.display()
            )),
            libc::ECONNREFUSED => Some(format!(
                "no VDE switch at {dir}: its control socket {} is left from one that is gone; \
                 {start}",
                ctl.display()
            )),
            libc::ETIMEDOUT => Some(format!("the switch at {dir} did not answer")),
            _ => None,
        };
    }
    // Any other locator goes through libvdeplug and its plugins.
    if let Err(e) = vde_sys::library() {
        return Some(e.to_string());
    }
    let scheme = vnl.split_once("://").map_or(vnl, |(s, _)| s);
    (errno == libc::EPROTONOSUPPORT || errno == libc::ENOENT && !vnl.contains("://")).then(|| {
        let pkg = match scheme {
            "slirp" => " (Debian package libvdeplug-slirp)",
            "vxvde" | "vxlan" | "udp" | "tap" | "ptp" | "hub" | "switch" | "cmd" => {
                " (Debian package libvdeplug2)"
            }
            _ => "",
        };
        format!("libvdeplug has no plugin for {scheme}://: install libvdeplug_{scheme}.so{pkg}")
    })
}
