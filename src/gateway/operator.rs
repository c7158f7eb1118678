//! What operators ask of the gateway besides runs: the agent catalog (`agents.list`,
//! `models.list`), aborting a session's run, and forgetting a session. Each handler
//! reads or changes the registry the way the session tools do, with the operator's
//! authority (the hub has already checked the caller's scopes).

use actix::prelude::*;

use super::messages::{Abort, AgentInfo, ForgetSession, GatewayError, ListAgents, Outcome, ShowRun};
use super::registry::Status;
use super::Gateway;
use crate::keys::RunId;
use crate::model::Usage;

impl Handler<ListAgents> for Gateway {
    type Result = Vec<AgentInfo>;

    fn handle(&mut self, _: ListAgents, _: &mut Self::Context) -> Self::Result {
        self.agents
            .iter()
            .map(|agent| {
                let models = std::iter::once(&agent.model).chain(&agent.fallbacks).chain(&agent.subagents.model);
                let unavailable = models
                    .filter_map(|m| self.model.check_model(m).err().map(|e| (m.clone(), e.to_string())))
                    .collect();
                AgentInfo {
                    id: agent.id.to_string(),
                    description: agent.description.clone(),
                    model: agent.model.clone(),
                    fallbacks: agent.fallbacks.clone(),
                    subagent_model: agent.subagents.model.clone(),
                    unavailable,
                }
            })
            .collect()
    }
}

impl Handler<ForgetSession> for Gateway {
    type Result = Result<bool, GatewayError>;

    fn handle(&mut self, msg: ForgetSession, _: &mut Self::Context) -> Self::Result {
        let Some(status) = self.registry.get(&msg.target).map(|e| e.status) else { return Ok(false) };
        if status == Status::Running {
            return Err(GatewayError::Busy(msg.target));
        }
        self.stop_idle(&msg.target);
        let mut forget = vec![msg.target];
        let mut forgotten = Vec::new();
        while let Some(key) = forget.pop() {
            if let Some(entry) = self.registry.get(&key) {
                // A running descendant of a session that is not running cannot exist:
                // ending a run ends its subtree.
                forget.extend(entry.children.iter().cloned());
            }
            self.registry.remove(&key);
            forgotten.push(key);
        }
        self.journal.record(crate::store::Record::Forgotten { keys: forgotten.into() });
        Ok(true)
    }
}

impl Handler<Abort> for Gateway {
    type Result = Result<Option<RunId>, GatewayError>;

    fn handle(&mut self, msg: Abort, _: &mut Self::Context) -> Self::Result {
        let running = self.registry.get(&msg.target).map(|e| (e.status, e.run_id.clone()));
        let Some((status, run_id)) = running else {
            return Err(GatewayError::NoSuchSession(msg.target));
        };
        if status != Status::Running || msg.run_id.is_some_and(|id| id != run_id) {
            return Ok(None);
        }
        self.end_run(&msg.target, &run_id, Outcome::Killed, "aborted by the operator".into(), Usage::default(), None);
        Ok(Some(run_id))
    }
}

impl Handler<ShowRun> for Gateway {
    type Result = Result<serde_json::Value, GatewayError>;

    fn handle(&mut self, msg: ShowRun, _: &mut Self::Context) -> Self::Result {
        let missing = || GatewayError::NoSuchRun(msg.run_id.clone());
        let key = self.registry.session_of_run(&msg.run_id).ok_or_else(missing)?;
        let (run_id, final_text) = self
            .registry
            .get(&key)
            .map(|e| (e.run_id.clone(), e.final_text().map(str::to_string)))
            .ok_or_else(missing)?;
        if run_id != msg.run_id {
            return Err(missing());
        }
        let root = self.registry.tree(&key).ok_or_else(missing)?;
        let (cost_usd, cost_on_root_model_usd) = crate::report::costs(&root, &self.pricing);
        Ok(serde_json::json!({
            "runId": run_id,
            "outcomes": crate::report::OutcomeCounts::of(&root),
            "tokens": crate::report::tree_tokens(&root),
            "costUsd": cost_usd,
            "costOnRootModelUsd": cost_on_root_model_usd,
            "finalAnswer": final_text,
            "root": root,
        }))
    }
}
