//! `capture [dev DEV] FILE` and `capture [dev DEV] off`: packet capture of a stack's link,
//! as `ip` would spell it. FILE is the rest of the command, spaces included (not `;`).

use super::{CmdError, Command};

const USAGE: &str = "usage: capture [dev DEV] { FILE | off }";

/// Parses the arguments of `capture` in `cmd`, the whole command as given.
pub fn parse(cmd: &str) -> Result<Command, CmdError> {
    let mut rest = cmd.trim();
    // The program's name (`capture`, or a path to it).
    rest = rest
        .split_once(char::is_whitespace)
        .map_or("", |(_, r)| r)
        .trim_start();
    let mut dev = None;
    if let Some(after) = rest
        .strip_prefix("dev")
        .filter(|r| r.starts_with(char::is_whitespace))
    {
        let after = after.trim_start();
        let (d, r) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        if d.is_empty() {
            return Err(CmdError::new(255, USAGE));
        }
        dev = Some(d.to_string());
        rest = r.trim_start();
    }
    let file = rest.trim_end();
    match file {
        "" => Err(CmdError::new(255, USAGE)),
        "off" | "stop" => Ok(Command::Capture { dev, file: None }),
        f => Ok(Command::Capture {
            dev,
            file: Some(f.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(dev: Option<&str>, file: Option<&str>) -> Command {
        Command::Capture {
            dev: dev.map(String::from),
            file: file.map(String::from),
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse("capture /tmp/a.pcapng").unwrap(),
            cap(None, Some("/tmp/a.pcapng"))
        );
        assert_eq!(
            parse("capture dev vde0 /tmp/my file.pcapng ").unwrap(),
            cap(Some("vde0"), Some("/tmp/my file.pcapng"))
        );
        assert_eq!(
            parse("capture dev vde0 off").unwrap(),
            cap(Some("vde0"), None)
        );
        assert_eq!(parse("capture off").unwrap(), cap(None, None));
        // A file called `device` is a file, not a keyword.
        assert_eq!(parse("capture device").unwrap(), cap(None, Some("device")));
        assert_eq!(parse("capture").unwrap_err().status, 255);
        assert_eq!(parse("capture dev vde0").unwrap_err().status, 255);
    }
}
