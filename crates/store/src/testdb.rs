//! Test support: every store test written with [`both_backends!`] runs twice, on SQLite (in
//! memory) and on PostgreSQL, each in a fresh empty database.
//!
//! PostgreSQL is the server `HOOKFLASH_TEST_POSTGRES_URL` points at (a role that may create
//! schemas), else a throwaway cluster this test process starts once with
//! `scripts/pg-test-cluster.sh` (initdb into a temporary directory, 127.0.0.1, a free port; it
//! is stopped and deleted when the process ends). Without PostgreSQL the `postgres` variants
//! fail: they never skip. Each PostgreSQL test gets its own schema (`search_path` in the URL),
//! left behind afterwards: point `HOOKFLASH_TEST_POSTGRES_URL` at a scratch database only.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use sqlx::Connection;

use crate::db::{Backend, Store};

tokio::task_local! {
    /// The backend [`store`] opens, set by [`both_backends!`] around the test body.
    static BACKEND: Backend;
}

/// The test cluster: its admin URL, the certificate its TLS is signed with, and the helper
/// script kept alive by its open stdin.
struct Cluster {
    url: String,
    ca: Option<String>,
    _script: Option<Child>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn start_cluster() -> Cluster {
    if let Ok(url) = std::env::var("HOOKFLASH_TEST_POSTGRES_URL") {
        if !url.is_empty() {
            let ca = std::env::var("HOOKFLASH_TEST_POSTGRES_CA")
                .ok()
                .filter(|c| !c.is_empty());
            return Cluster {
                url,
                ca,
                _script: None,
            };
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port for the test PostgreSQL");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-cluster.sh");
    let mut child = Command::new(&script)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("reading the test cluster's URL");
    let url = line.trim().to_string();
    line.clear();
    stdout
        .read_line(&mut line)
        .expect("reading the test cluster's certificate");
    let ca = line
        .trim()
        .strip_prefix("ca=")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    assert!(
        url.starts_with("postgres://"),
        "the test PostgreSQL did not start (see the output above); install the Debian package \
         postgresql or set HOOKFLASH_TEST_POSTGRES_URL"
    );
    Cluster {
        url,
        ca,
        _script: Some(child),
    }
}

/// The admin URL of the test PostgreSQL (started on first use).
pub(crate) fn cluster_url() -> &'static str {
    &CLUSTER.get_or_init(start_cluster).url
}

/// The certificate (PEM path) the test PostgreSQL's TLS is signed with, if it offers TLS.
pub(crate) fn cluster_ca() -> Option<&'static str> {
    CLUSTER.get_or_init(start_cluster).ca.as_deref()
}

/// A URL of a fresh, empty schema on the test PostgreSQL (its own `search_path`).
pub(crate) async fn fresh_postgres_url() -> String {
    let base = cluster_url();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::postgres::PgConnection::connect(base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create the test schema");
    let _ = conn.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

/// A new store with an empty, migrated database on the backend of the running
/// [`both_backends!`] test (SQLite outside of one).
pub(crate) async fn store() -> Store {
    match BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite) {
        Backend::Sqlite => Store::open_memory().await.unwrap(),
        Backend::Postgres => Store::connect_postgres(&fresh_postgres_url().await, None)
            .await
            .unwrap(),
    }
}

/// A test database that several stores can open (a server and the CLI, a restart): SQLite in
/// a temporary data directory, or a fresh PostgreSQL schema (with a temporary data directory
/// for its files). The directory is deleted on drop.
pub(crate) struct TestDb {
    dir: std::path::PathBuf,
    url: Option<String>,
}

impl TestDb {
    pub(crate) async fn new() -> TestDb {
        let dir = std::env::temp_dir().join(format!("hookflash-test-{}", uuid::Uuid::new_v4()));
        let url = match backend() {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_postgres_url().await),
        };
        TestDb { dir, url }
    }

    /// A new store on this database (migrations run again: a no-op after the first).
    pub(crate) async fn open(&self) -> Store {
        match &self.url {
            None => Store::open(&self.dir).await.unwrap(),
            Some(url) => Store::open_postgres(url, &self.dir).await.unwrap(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The backend of the running [`both_backends!`] test.
pub(crate) fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// Runs `body` with [`store`] opening `backend`.
pub(crate) async fn on<F: std::future::Future<Output = ()>>(backend: Backend, body: F) {
    BACKEND.scope(backend, body).await
}

/// Turns each `async fn name() { ... }` into a module `name` with two tests, `sqlite` and
/// `postgres`, that run the body with [`store`] opening that backend.
macro_rules! both_backends {
    // On tokio's multi-thread runtime (2 workers).
    (multi_thread async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::testdb::on($crate::db::Backend::Sqlite, async $body).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::testdb::on($crate::db::Backend::Postgres, async $body).await
            }
        }
    };
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                $crate::testdb::on($crate::db::Backend::Sqlite, async $body).await
            }

            #[tokio::test]
            async fn postgres() {
                $crate::testdb::on($crate::db::Backend::Postgres, async $body).await
            }
        }
    };
}
pub(crate) use both_backends;
