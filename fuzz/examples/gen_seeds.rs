//! Writes the seed inputs of every target to corpus/<target>/ (run from fuzz/:
//! `cargo +nightly run --release --example gen_seeds`). With `--lab`, prints instead what
//! real/frames.sh needs to address captured frames to a lab: per medium, the stack's MAC,
//! its connected socket's port, and the next sequence numbers (the stack's, the peer's).

use vdestack::fuzzing::{Lab, Medium};

fn main() -> std::io::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--lab") {
        for medium in [Medium::Ethernet, Medium::Ip] {
            let lab = Lab::new(medium, true);
            let mac: Vec<String> = lab.mac.iter().map(|b| format!("{b:02x}")).collect();
            let (seq, pseq) = lab.seq;
            println!("{:?} {} {} {seq} {pseq}", medium, mac.join(":"), lab.port);
            lab.end();
        }
        return Ok(());
    }
    for target in vdestack::fuzzing::TARGETS {
        let dir = std::path::Path::new("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, data) in vdestack::fuzzing::seeds(target) {
            std::fs::write(dir.join(name), data)?;
        }
    }
    Ok(())
}
