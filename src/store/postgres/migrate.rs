//! The Postgres schema's migrations: the numbered SQL files in `migrations/postgres/`,
//! compiled into the binary and applied in order.
//!
//! Several processes may start at once against one database (a gateway and its
//! workers), so [`migrate`] runs in one transaction holding a transaction-level advisory
//! lock: the first process applies what is missing, the others wait for it and then
//! find nothing to do. Each applied migration is a row of `schema_migrations(version,
//! name, applied_at)`. A database whose newest migration is beyond this binary's is
//! refused ([`StoreError::TooNew`]): an older hivegate must not write to a schema it
//! does not know.
//!
//! To add a migration, write `migrations/postgres/NNNN_what.sql` (the next number; it
//! runs inside the transaction, so nothing in it may need to run outside one) and
//! append its line to [`MIGRATIONS`]. Never edit one that has shipped.

use postgres::Client;

use crate::store::StoreError;

/// One schema change: its version (its file's number) and its SQL.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first, versions counting up from 1.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_initial", sql: include_str!("../../../migrations/postgres/0001_initial.sql") },
    Migration { version: 2, name: "0002_work", sql: include_str!("../../../migrations/postgres/0002_work.sql") },
];

/// The schema version this binary writes: the newest migration's.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The advisory lock every migrating process takes ("hivegate" in ASCII). Advisory
/// locks are per database, so processes on other databases of the server never wait.
pub const LOCK: i64 = 0x6869_7665_6761_7465;

/// Apply what `client`'s database lacks of [`MIGRATIONS`], in one transaction under
/// [`LOCK`]: the versions applied (none when it was up to date). `shown` is the
/// database's URL as it may be shown, for errors.
pub fn migrate(client: &mut Client, shown: &str) -> Result<Vec<i64>, StoreError> {
    migrate_to(client, shown, MIGRATIONS)
}

/// [`migrate`] with another list (tests).
pub fn migrate_to(client: &mut Client, shown: &str, migrations: &[Migration]) -> Result<Vec<i64>, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let found: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?.try_get(0)?;
    let known = migrations.last().map_or(0, |m| m.version);
    if found > known {
        return Err(StoreError::TooNew { path: shown.to_string(), found, known });
    }
    let mut applied = Vec::new();
    for migration in migrations.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql).map_err(|e| StoreError::Migration {
            url: shown.to_string(),
            version: migration.version,
            name: migration.name,
            message: super::describe(&e),
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )?;
        applied.push(migration.version);
    }
    tx.commit()?;
    if !applied.is_empty() {
        tracing::info!(url = shown, versions = ?applied, "migrated the state database");
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_count_up_from_one_and_each_names_its_file() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i64 + 1);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)), "{}", migration.name);
            assert!(!migration.sql.trim().is_empty());
        }
        assert_eq!(latest(), MIGRATIONS.len() as i64);
    }
}
