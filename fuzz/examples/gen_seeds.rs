//! Writes the seed inputs of every target to corpus/<target>/ (run from fuzz/:
//! `cargo +nightly run --release --example gen_seeds`).

fn main() -> std::io::Result<()> {
    for target in vdestack::fuzzing::TARGETS {
        let dir = std::path::Path::new("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, data) in vdestack::fuzzing::seeds(target) {
            std::fs::write(dir.join(name), data)?;
        }
    }
    Ok(())
}
