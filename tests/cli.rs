//! The CLI as people meet it: `--help` with examples, errors that name the fix.

#[path = "support/programs.rs"]
mod programs;

use std::process::Command;

fn vdestack(args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new(programs::vdestack());
    c.args(args)
        .env("RUST_BACKTRACE", "0")
        .env("VDESTACK_LOG", "off");
    programs::clean_env(&mut c);
    let out = c.output().expect("run vdestack");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_has_examples() {
    for (args, example) in [
        (
            &["run", "--help"][..],
            "vdestack run --net vde:///tmp/sw --conf eth,ip=",
        ),
        (&["run", "--help"][..], "--pcap /tmp/run.pcapng"),
        (
            &["demo", "--help"][..],
            "vdestack demo --mb 64 --net 'mem://demo[loss=2%",
        ),
        (&["--help"][..], "Examples:"),
    ] {
        let (ok, out, err) = vdestack(args);
        assert!(ok, "{args:?}: {err}");
        assert!(out.contains(example), "{args:?} lacks {example:?}:\n{out}");
    }
    // Every option the man page lists is one the CLI takes, and the other way round.
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man/vdestack.1"))
        .unwrap();
    let (_, run_help, _) = vdestack(&["run", "--help"]);
    let (_, demo_help, _) = vdestack(&["demo", "--help"]);
    for opt in ["net", "iface", "cmd", "conf", "pcap", "mb"] {
        let in_man = man.contains(&format!("\\fB\\-\\-{opt}\\fP"));
        let in_cli =
            run_help.contains(&format!("--{opt} ")) || demo_help.contains(&format!("--{opt} "));
        assert!(in_man && in_cli, "--{opt}: man {in_man}, CLI {in_cli}");
    }
}

#[test]
fn a_missing_switch_names_the_directory_and_how_to_start_one() {
    let dir = programs::WorkDir::new();
    let sw = dir.path().join("no-switch-here");
    let net = format!("vde://{}", sw.display());
    let (ok, _, err) = vdestack(&["run", "--net", &net, "--", "true"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "looked for its control socket {}/ctl",
            sw.display()
        )),
        "{err}"
    );
    assert!(err.contains("the directory does not exist"), "{err}");
    assert!(
        err.contains(&format!("vde_switch -s {}", sw.display())),
        "{err}"
    );
    // A directory with no switch in it.
    std::fs::create_dir(&sw).unwrap();
    let (ok, _, err) = vdestack(&["run", "--net", &net, "--", "true"]);
    assert!(!ok && err.contains("which does not exist"), "{err}");
}

#[test]
fn a_locator_without_a_plugin_says_so() {
    let (ok, _, err) = vdestack(&["run", "--net", "nosuchplugin://x", "--", "true"]);
    assert!(!ok);
    assert!(err.contains("Protocol not supported"), "{err}");
    assert!(
        err.contains("libvdeplug has no plugin for nosuchplugin://"),
        "{err}"
    );
}
