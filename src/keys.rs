//! Identifiers: session keys and run ids.
//!
//! A session key names a session in the tree: `agent:<agentId>:main` for a main session,
//! `agent:<agentId>:subagent:<uuid>` for a first-level subagent, and the parent's key
//! plus `:subagent:<uuid>` below that, so a key shows its lineage. Keys are `Arc<str>`
//! inside: cloning one is a reference-count bump, which matters on the spawn path.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What separates a child's key from its parent's.
const SUBAGENT: &str = ":subagent:";

/// The UUID in a new child's key and in a new run id: time-ordered (version 7), so the
/// store's indexes on keys and run ids take each new one at their end rather than on a
/// random page. With random (version 4) ids a burst's inserts and later deletes touched
/// a page of each index apiece, and SQLite spilled and re-read its cache: the process's
/// kernel time in `hivegate bench --spawns 1000 --no-load --handshakes 0`, nearly all of
/// it the store's, fell from 2.2-2.7 s to 0.8-0.9 s with these. They
/// are names, not secrets (authority is a [`crate::capability::Capability`], never
/// knowing a key), so the timestamp they carry gives nothing away; nonces and tokens
/// stay random. Each costs about 450 instructions more than a random one (a clock read
/// and uuid's process-wide counter, under its lock), so a spawn makes one, for both its
/// child's key and its run ([`SessionKey::child`]).
fn fresh_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionKey(Arc<str>);

impl SessionKey {
    pub fn main(agent_id: &str) -> SessionKey {
        SessionKey(format!("agent:{agent_id}:main").into())
    }

    /// A new child of `self` running `agent_id`: its key, and the id of its run. A
    /// subagent has exactly one run (a `session` child's follow-ups stay under it), so
    /// both carry the same fresh uuid: one id made per spawn, not two, which took about
    /// 700 instructions off the spawn handler's 9,200. The key is built by appending, not
    /// `format!`: the formatting machinery cost more than the rest of the key together.
    pub fn child(&self, agent_id: &str) -> (SessionKey, RunId) {
        let mut id = uuid::Uuid::encode_buffer();
        let id = fresh_id().hyphenated().encode_lower(&mut id);
        let run_id = RunId(Arc::from(&*id));
        let mut key = String::with_capacity(self.0.len().max(agent_id.len() + 6) + SUBAGENT.len() + id.len());
        if self.is_main() {
            key.push_str("agent:");
            key.push_str(agent_id);
        } else {
            key.push_str(&self.0);
        }
        key.push_str(SUBAGENT);
        key.push_str(id);
        (SessionKey(key.into()), run_id)
    }

    /// A main session: `agent:<agentId>:<name>` with no `:subagent:` in it (`main` is
    /// the default name; operators may name others, `agent:brain:k1`).
    pub fn is_main(&self) -> bool {
        // A child's key ends with `:subagent:<uuid>` at every depth, and a main session's
        // name never contains `:subagent:` (see `is_main_of`): one comparison at a fixed
        // offset, as this runs several times per spawn.
        const CHILD_TAIL: usize = ":subagent:".len() + 36;
        let key = self.0.as_bytes();
        !(key.len() >= CHILD_TAIL && key[key.len() - CHILD_TAIL..].starts_with(b":subagent:"))
    }

    /// Whether this names a main session of `agent_id` (a sane name: at most 200
    /// characters of letters, digits and `-_.:`).
    pub fn is_main_of(&self, agent_id: &str) -> bool {
        let name = self
            .0
            .strip_prefix("agent:")
            .and_then(|rest| rest.strip_prefix(agent_id))
            .and_then(|r| r.strip_prefix(':'));
        name.is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 200
                && !name.starts_with("subagent:")
                && !name.contains(":subagent:")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How deep in its tree this session is: 0 for a main session, 1 for its children.
    pub fn depth(&self) -> u32 {
        self.0.matches(":subagent:").count() as u32
    }
}

impl From<&str> for SessionKey {
    fn from(s: &str) -> Self {
        SessionKey(s.into())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// One run of a session (a subagent has exactly one; a main session one per task).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Arc<str>);

impl RunId {
    pub fn new() -> RunId {
        let mut id = uuid::Uuid::encode_buffer();
        RunId(Arc::from(&*fresh_id().hyphenated().encode_lower(&mut id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl From<&str> for RunId {
    fn from(s: &str) -> Self {
        RunId(s.into())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// 32 random bytes from the OS, base64url without padding: per-process secrets such as
/// the builtin provider's bearer token.
pub fn random_token() -> Result<String, rand::Error> {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_show_lineage() {
        let main = SessionKey::main("brain");
        assert_eq!(main.as_str(), "agent:brain:main");
        assert!(main.is_main_of("brain") && SessionKey::from("agent:brain:k1").is_main_of("brain"));
        assert!(SessionKey::from("agent:brain:k1").is_main() && SessionKey::from("agent:brain:k1:x").is_main());
        let (named_child, _) = SessionKey::from("agent:brain:k1").child("executor");
        assert!(!named_child.is_main() && !named_child.child("executor").0.is_main());
        for bad in ["agent:brain:", "agent:other:k1", "agent:brain:subagent:x", "agent:brain:a b", "brain:k1"] {
            assert!(!SessionKey::from(bad).is_main_of("brain"), "{bad}");
        }
        let (child, _) = main.child("executor");
        assert!(child.as_str().starts_with("agent:executor:subagent:"));
        assert!(!child.is_main());
        let (grandchild, grandchild_run) = child.child("executor");
        assert!(grandchild.as_str().starts_with(child.as_str()));
        assert_eq!(grandchild.as_str().matches(":subagent:").count(), 2);
        // Each level adds `:subagent:` and a lowercase hyphenated v7 uuid, nothing else.
        let tail = &grandchild.as_str()[child.as_str().len()..];
        let id = tail.strip_prefix(":subagent:").unwrap();
        assert_eq!((id.len(), id.to_lowercase()), (36, id.to_string()));
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
        // Its run is named by the same uuid.
        assert_eq!(grandchild_run.as_str(), id);
        let run = RunId::new();
        assert_eq!(uuid::Uuid::parse_str(run.as_str()).unwrap().hyphenated().to_string(), run.as_str());
    }

    /// What the store's indexes rely on: each new key or run id sorts after the one
    /// made before it, within a millisecond too.
    #[test]
    fn new_keys_and_run_ids_sort_in_the_order_they_were_made() {
        let parent = SessionKey::main("brain");
        let (keys, child_runs): (Vec<SessionKey>, Vec<RunId>) = (0..10_000).map(|_| parent.child("executor")).unzip();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(child_runs.windows(2).all(|pair| pair[0] < pair[1]));
        let runs: Vec<RunId> = (0..10_000).map(|_| RunId::new()).collect();
        assert!(runs.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
