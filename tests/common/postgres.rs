//! A fresh Postgres database per test: the library's own test helper
//! (`src/store/testdb.rs`), shared so integration tests make databases the same way.

#[allow(dead_code)]
#[path = "../../src/store/testdb.rs"]
mod testdb;

#[allow(unused_imports)]
pub use testdb::*;
