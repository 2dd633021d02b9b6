//! The test PostgreSQL server (`scripts/pg-test-server.sh start`, named by `SLUICE_TEST_PG_URL`):
//! tests that need it are ignored by default, and each gets a database of its own.

use std::time::SystemTime;

pub const PG_IGNORED: &str = "needs PostgreSQL: set SLUICE_TEST_PG_URL (scripts/pg-test-server.sh)";

/// A fresh database on the test server; its URL.
pub fn pg_database() -> String {
    let base = std::env::var("SLUICE_TEST_PG_URL").expect(PG_IGNORED);
    let name = format!(
        "sluice_test_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    // The URL's path names the database (the host may be empty: a unix socket in `?host=`).
    let (head, query) = base.split_once('?').unwrap_or((&base, ""));
    let (server, _) = head.rsplit_once('/').expect("a URL with a database path");
    format!("{server}/{name}?{query}")
}
