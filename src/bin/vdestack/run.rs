//! `vdestack run`: a program in a private stack.
//!
//! This process creates the stack (its engine thread serves it) and starts the program with
//! libvdestack.so preloaded and the stack's name and its engine's key in the environment;
//! the library makes that stack the default for every process of the program's tree, which
//! keeps it across exec and a change of uid.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use vdestack::Stack;

/// Arguments of `vdestack run`.
#[derive(Args)]
#[command(after_help = "Examples:
  vdestack run -- sh -c 'python3 -m http.server 8000 & sleep 1; curl localhost:8000'
      loopback only: the program's sockets see nothing of the host's network
  vdestack run --net vde:///tmp/sw --conf eth,ip=10.0.0.2/24,gw=10.0.0.254 -- curl http://10.0.0.1/
      on a VDE switch (start one: vde_switch -s /tmp/sw)
  vdestack run --net slirp:// --conf eth,dhcp -- curl https://example.org/
      through slirp (libvdeplug-slirp), configured by DHCP
  vdestack run --net 'mem://lab[loss=2%]' --cmd 'ip link set vde0 up' -- ./my-test
  vdestack run --net vde:///tmp/sw --conf eth,dhcp --pcap /tmp/run.pcapng -- ./client
      then: tcpdump -r /tmp/run.pcapng
  VDESTACK_LOG=debug vdestack run --net vde:///tmp/sw --conf eth,dhcp -- ./client
      the engine's log on stderr (EnvFilter syntax; default warn)

Locators: vde:///DIR (a VDE switch), any vdeplug4 locator (slirp://, vxvde://, ...),
tap://NAME, tun://NAME, mem://NAME[impairments]; see vde_addstack(3).")]
pub struct RunArgs {
    /// The network: vde:///DIR, any vdeplug4 locator, tap://NAME, tun://NAME, mem://NAME;
    /// none: loopback only.
    #[arg(long)]
    net: Option<String>,
    /// The interface's name.
    #[arg(long, default_value = "vde0")]
    iface: String,
    /// Configuration commands, as vde_stackcmd takes them (repeatable).
    #[arg(long)]
    cmd: Vec<String>,
    /// Short configuration: "eth,ip=10.0.0.1/24,gw=10.0.0.254,dns=10.0.0.254" or "eth,dhcp"
    /// (also mac=, mtu=; repeatable).
    #[arg(long)]
    conf: Vec<String>,
    /// Capture the link's frames, both ways, into FILE (pcapng: tcpdump -r FILE, Wireshark),
    /// from before the configuration (a DHCP exchange included) until the stack ends.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    program: Vec<String>,
}

/// Runs the program; returns the exit status to leave with.
pub fn run(a: RunArgs) -> Result<i32> {
    let lib = library()?;
    let net = a.net.as_deref().unwrap_or("");
    let stack =
        Stack::new(net, Some(&a.iface)).with_context(|| format!("creating a stack on {net:?}"))?;
    if let Some(p) = &a.pcap {
        stack
            .capture(p)
            .with_context(|| format!("--pcap {}", p.display()))?;
    }
    let mut cmds: Vec<String> = Vec::new();
    for c in &a.conf {
        cmds.push(conf_to_cmds(c, &a.iface)?);
    }
    cmds.extend(a.cmd.iter().cloned());
    for c in &cmds {
        if let Err(e) = stack.cmd(c) {
            eprintln!("{}", e.message);
            bail!("configuration {c:?} failed with status {}", e.status);
        }
    }
    let key = stack.ctl().key().context("the engine has no key")?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", lib.display()),
        _ => lib.display().to_string(),
    };
    // The terminal's ^C goes to the program; this process waits for it to end.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = Command::new(&a.program[0])
        .args(&a.program[1..])
        .env("LD_PRELOAD", preload)
        .env(
            "VDESTACK_CTL",
            String::from_utf8_lossy(stack.ctl().name()).as_ref(),
        )
        .env("VDESTACK_STACK", stack.id().to_string())
        .env(
            vdestack::internal::control::key::ENV_KEY,
            vdestack::internal::control::key::to_hex(&key),
        )
        .env_remove("VDESTACK_NET")
        .status()
        .with_context(|| format!("starting {}", a.program[0]))?;
    // What the program wrote just before it exited is still on its way: let it go out (and
    // its connections close) before the stack goes with this process.
    stack.linger(std::time::Duration::from_secs(1));
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Turns a `--conf` string into configuration commands.
fn conf_to_cmds(conf: &str, iface: &str) -> Result<String> {
    let mut pre = Vec::new();
    let mut post = Vec::new();
    let mut dns = Vec::new();
    for item in conf.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        match (k, v) {
            ("eth", _) => {}
            ("ip", v) if !v.is_empty() => post.push(format!("ip addr add {v} dev {iface}")),
            ("gw", v) if !v.is_empty() => post.push(format!("ip route add default via {v}")),
            ("dns", v) if !v.is_empty() => dns.push(v.to_string()),
            ("dhcp", "") => post.push(format!("dhcp {iface}")),
            ("mac", v) if !v.is_empty() => pre.push(format!("ip link set {iface} address {v}")),
            ("mtu", v) if !v.is_empty() => pre.push(format!("ip link set {iface} mtu {v}")),
            _ => bail!(
                "--conf: cannot make sense of {item:?} (eth, ip=, gw=, dns=, dhcp, mac=, mtu=)"
            ),
        }
    }
    pre.push(format!("ip link set {iface} up"));
    pre.extend(post);
    if !dns.is_empty() {
        pre.push(format!("nameserver {}", dns.join(" ")));
    }
    Ok(pre.join("; "))
}

/// Where libvdestack.so is: $VDESTACK_LIB, beside this program (a cargo build), or in the
/// lib directory next to its bin directory (an install).
fn library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VDESTACK_LIB") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let dir = exe.parent().context("this program has no directory")?;
    let candidates = [
        dir.join("libvdestack.so"),
        dir.join("../lib/libvdestack.so.0"),
        dir.join("../lib/libvdestack.so"),
    ];
    for c in &candidates {
        if c.exists() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    bail!(
        "libvdestack.so not found beside {} or in ../lib: build it (cargo build --release --workspace) or set VDESTACK_LIB",
        exe.display()
    )
}

#[cfg(test)]
mod tests {
    use super::conf_to_cmds;

    #[test]
    fn conf_strings() {
        assert_eq!(
            conf_to_cmds("eth,ip=10.0.0.1/24,gw=10.0.0.254,dns=10.0.0.254", "vde0").unwrap(),
            "ip link set vde0 up; ip addr add 10.0.0.1/24 dev vde0; ip route add default via 10.0.0.254; nameserver 10.0.0.254"
        );
        assert_eq!(
            conf_to_cmds("eth,dhcp", "eth1").unwrap(),
            "ip link set eth1 up; dhcp eth1"
        );
        assert!(conf_to_cmds("eth,frob=1", "vde0").is_err());
    }
}
