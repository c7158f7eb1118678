//! A fresh Postgres database for an integration test: the library's own test helper
//! (`src/store/testdb.rs`), included as it is, so unit and integration tests find the
//! server (`HIVEGATE_TEST_DATABASE_URL`, else `scripts/postgres start`) and skip or
//! fail (`HIVEGATE_REQUIRE_POSTGRES=1`) the same way.

#[path = "../../src/store/testdb.rs"]
mod testdb;

#[allow(unused_imports)] // not every test binary that includes `common` uses it
pub use testdb::*;
