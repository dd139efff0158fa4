//! A child process for testkit's own cleanup tests: starts the process's shared server,
//! checks it is up, prints where it lives, then returns (`exit`) or hangs until killed
//! (`hang`). The tests then check the watchdog tore the server down after the process ended.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use pgfleet_testkit::PgServer;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "exit".into());
    let server = PgServer::shared();
    assert_eq!(server.psql("SELECT 1"), "1");
    println!(
        "CHILD-SERVER port={} data_dir={}",
        server.port(),
        server.data_dir().display()
    );
    if mode == "hang" {
        std::thread::sleep(Duration::from_secs(600));
    }
}
