//! Prints pgfleet's CustomResourceDefinitions as YAML.
//!
//! ```text
//! crdgen                  # every CRD as one multi-document YAML stream on stdout
//! crdgen --out-dir DIR    # one file per CRD: DIR/tenants.yaml, DIR/poolerfleets.yaml
//! crdgen --check DIR      # exit 1 when DIR's files differ from what --out-dir would write
//! ```
//!
//! For CI: `crdgen --check charts/pgfleet/crds` fails when the chart's copy is stale (the
//! crate's test `the_charts_copy_is_current` checks the same once the chart exists).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: crdgen [--out-dir DIR | --check DIR]";

enum Command {
    Print,
    Write(PathBuf),
    Check(PathBuf),
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("crdgen: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Print => print(),
        Command::Write(dir) => write(&dir),
        Command::Check(dir) => check(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let command = match args.next().as_deref() {
        None => Command::Print,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        Some(flag @ ("--out-dir" | "--check")) => {
            let dir = args
                .next()
                .ok_or_else(|| format!("{flag} needs a directory"))?;
            if flag == "--out-dir" {
                Command::Write(dir.into())
            } else {
                Command::Check(dir.into())
            }
        }
        Some(other) => return Err(format!("unknown argument {other:?}")),
    };
    match args.next() {
        Some(extra) => Err(format!("unexpected argument {extra:?}")),
        None => Ok(command),
    }
}

fn print() -> Result<(), String> {
    let yaml = pgfleet_crds::crds_yaml().map_err(|e| format!("cannot render CRDs: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(yaml.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that stops early (`crdgen | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// Each CRD's file name and contents.
fn files() -> Result<Vec<(String, String)>, String> {
    pgfleet_crds::crds()
        .iter()
        .map(|crd| {
            let yaml = pgfleet_crds::crd_yaml(crd)
                .map_err(|e| format!("cannot render {}: {e}", crd.spec.names.plural))?;
            Ok((pgfleet_crds::crd_file_name(crd), yaml))
        })
        .collect()
}

fn write(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, yaml) in files()? {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn check(dir: &Path) -> Result<(), String> {
    let mut stale = Vec::new();
    for (name, yaml) in files()? {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(current) if current == yaml => {}
            Ok(_) => stale.push(format!("{} is stale", path.display())),
            Err(e) => stale.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}; regenerate with `cargo run -p pgfleet-crds --bin crdgen -- --out-dir {}`",
            stale.join("; "),
            dir.display()
        ))
    }
}
