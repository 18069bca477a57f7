//! Runs the PostgreSQL parts of the book for real, with the PostgreSQL binaries installed on
//! this machine (Debian's 15 here; the Compose image is newer).
//!
//! - [`cluster`]: scratch servers (`initdb`, `pg_ctl`), running commands as `postgres`, `psql`.
//! - [`compose`]: the little of `docker-compose.yml` these checks need (a service's command,
//!   environment and volumes), with container paths mapped onto host directories.
//! - [`replica`]: brings the `db-replica` service up from a running primary with the book's
//!   entry script, sees it streaming, runs the book's backup and restore scripts and compares
//!   the restored database with the primary ([`replica::check`], called by the stack test).
//! - [`migrate`]: the major-version migration procedure of the tuning guide, dump and restore
//!   into a fresh cluster.
//! - [`sql`]: every `sql` block of the book against a live Synapse database.
//! - [`conf`]: each `postgres/postgresql.conf` variant of the book started by a real server.

pub mod cluster;
pub mod compose;
pub mod conf;
pub mod migrate;
pub mod replica;
pub mod sql;
