//! Golden fixtures: real frames from the OpenClaw 2026.9.6 captures (good_*) and broken
//! input (bad_*). A good fixture is parsed into the typed wire structs, re-serialized,
//! and compared as a whole JSON value with `expected` (or with the frame itself); a bad
//! fixture must fail with exactly the recorded error, response code and close frame.

#[cfg(test)]
mod golden {
    use std::fs;
    use std::path::PathBuf;

    use hivegate::protocol::*;
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::{json, Value};

    struct Fixture {
        name: String,
        doc: Value,
    }

    fn fixtures(prefix: &str) -> Vec<Fixture> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(prefix) && name.ends_with(".json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let text = fs::read_to_string(dir.join(&name)).unwrap();
                let doc = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                Fixture { name, doc }
            })
            .collect()
    }

    /// The text a client or server would have put in the WebSocket message.
    fn input_text(doc: &Value) -> String {
        match doc.get("raw").and_then(Value::as_str) {
            Some(raw) => raw.to_string(),
            None => serde_json::to_string(&doc["frame"]).unwrap(),
        }
    }

    fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }

    /// Typed params of the methods whose params the shell decodes.
    fn typed_params(frame: &RequestFrame) -> Result<Option<Value>, ProtocolError> {
        fn via<T: DeserializeOwned + Serialize>(frame: &RequestFrame) -> Result<Option<Value>, ProtocolError> {
            let typed: T = frame.params_as()?;
            Ok(Some(to_value(&typed)?))
        }
        match frame.method.as_str() {
            "device.pair.approve" | "device.pair.reject" | "node.pair.approve" | "node.pair.reject" => {
                via::<RequestIdParams>(frame)
            }
            "node.invoke" => via::<NodeInvokeParams>(frame),
            "node.invoke.result" => via::<NodeInvokeResultParams>(frame),
            "node.event" => via::<NodeEventParams>(frame),
            _ => Ok(frame.params.clone()),
        }
    }

    fn payload_round_trip(kind: &str, payload: &Value) -> Result<Value, String> {
        match kind {
            "connect.challenge" => round_trip::<ChallengePayload>(payload),
            "tick" => round_trip::<TickPayload>(payload),
            "shutdown" => round_trip::<ShutdownPayload>(payload),
            "device.pair.resolved" => round_trip::<DevicePairResolved>(payload),
            "node.pair.resolved" => round_trip::<NodePairResolved>(payload),
            "node.runnerInventory.changed" => round_trip::<NodeRunnerInventoryChanged>(payload),
            "node.invoke.request" => round_trip::<NodeInvokeRequest>(payload),
            "hello-ok" => round_trip::<HelloOk>(payload),
            "device.pair.list" => round_trip::<DevicePairList>(payload),
            "device.pair.approve" => round_trip::<DevicePairApproveResult>(payload),
            "node.pair.list" => round_trip::<NodePairList>(payload),
            "node.pair.approve" => round_trip::<NodePairApproveResult>(payload),
            "node.list" => round_trip::<NodeListResult>(payload),
            "node.invoke" => round_trip::<NodeInvokeResponse>(payload),
            "ok-ack" => round_trip::<OkAck>(payload),
            other => Err(format!("fixture names unknown payload `{other}`")),
        }
    }

    /// Parses a good fixture the way the gateway would and re-serializes it.
    fn reserialize(doc: &Value) -> Result<Value, String> {
        let text = input_text(doc);
        match doc["parse"].as_str() {
            Some("connect") => {
                let connect = parse_connect_frame(&text).map_err(|e| e.to_string())?;
                let p = &connect.params;
                let version = negotiate_protocol(p.min_protocol, p.max_protocol, p.role).map_err(|e| e.to_string())?;
                if Some(u64::from(version)) != doc["protocol"].as_u64() {
                    return Err(format!("negotiated {version}, fixture expects {}", doc["protocol"]));
                }
                Ok(
                    json!({"type": "req", "id": connect.id, "method": "connect", "params": to_value(p).map_err(|e| e.to_string())?}),
                )
            }
            Some("client_request") => {
                let mut frame = parse_client_frame(&text).map_err(|e| e.to_string())?;
                frame.params = typed_params(&frame).map_err(|e| e.to_string())?;
                to_value(&Frame::Request(frame)).map_err(|e| e.to_string())
            }
            Some("server_frame") => {
                let kind = doc["payload"].as_str().unwrap_or_default();
                let mut frame = to_value(&parse_frame(&text).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                if kind == "error" {
                    let error: ErrorShape =
                        serde_json::from_value(frame["error"].clone()).map_err(|e| e.to_string())?;
                    if error.detail_code() == Some(detail_codes::PAIRING_REQUIRED) {
                        frame["error"]["details"] = round_trip::<PairingRequiredDetails>(&frame["error"]["details"])?;
                    }
                } else {
                    frame["payload"] = payload_round_trip(kind, &frame["payload"])?;
                }
                Ok(frame)
            }
            other => Err(format!("unknown parse mode {other:?}")),
        }
    }

    /// The error a bad fixture produces.
    fn failure(doc: &Value) -> Option<ProtocolError> {
        let text = input_text(doc);
        match doc["parse"].as_str() {
            Some("connect") => parse_connect_frame(&text)
                .and_then(|c| negotiate_protocol(c.params.min_protocol, c.params.max_protocol, c.params.role))
                .err(),
            Some("client_request") => parse_client_frame(&text).and_then(|f| typed_params(&f)).err(),
            _ => None,
        }
    }

    #[test]
    fn good_fixtures_round_trip_as_whole_values() {
        let good = fixtures("good_");
        assert!(good.len() >= 30, "expected the trace fixtures, found {}", good.len());
        for Fixture { name, doc } in good {
            let expected = doc.get("expected").unwrap_or(&doc["frame"]);
            let actual = reserialize(&doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&actual, expected, "{name}: re-serialized frame differs");
        }
    }

    #[test]
    fn bad_fixtures_fail_with_the_exact_error() {
        let bad = fixtures("bad_");
        assert!(bad.len() >= 15, "expected the bad fixtures, found {}", bad.len());
        for Fixture { name, doc } in bad {
            let err = failure(&doc).unwrap_or_else(|| panic!("{name}: parsed without error"));
            assert_eq!(Some(err.to_string().as_str()), doc["error"].as_str(), "{name}: message");
            assert_eq!(err.request_id(), doc["requestId"].as_str(), "{name}: request id");
            let shape = err.to_error_shape();
            assert_eq!(shape.code, doc["errorCode"].as_str().unwrap_or("INVALID_REQUEST"), "{name}: code");
            if let Some(details) = doc.get("errorDetails") {
                assert_eq!(shape.details.as_ref(), Some(details), "{name}: details");
            }
            if let Some(close) = doc.get("close") {
                let actual = err.close();
                assert_eq!(json!([actual.code, actual.reason]), *close, "{name}: close");
            }
        }
    }

    fn frame_of(name: &str) -> Value {
        fixtures(name).pop().map(|f| f.doc["frame"].clone()).unwrap_or_else(|| panic!("missing fixture {name}"))
    }

    #[test]
    fn frames_hivegate_builds_match_the_trace() {
        let challenge = ChallengePayload {
            nonce: "c447e068-83de-45a5-9061-2a1396e195f3".into(),
            ts: 1795490205211,
            capabilities: Some(vec!["model-catalog-snapshot".into()]),
        };
        let built = to_value(&Frame::Event(EventFrame::from_payload(&challenge).unwrap())).unwrap();
        assert_eq!(built, frame_of("good_event_connect_challenge.json"));

        let tick = EventFrame::from_payload(&TickPayload { ts: 1795490262646 }).unwrap().with_seq(1);
        assert_eq!(to_value(&Frame::Event(tick)).unwrap(), frame_of("good_event_tick.json"));

        let shutdown = EventFrame::from_payload(&ShutdownPayload::gateway_stopping()).unwrap().with_seq(7);
        assert_eq!(to_value(&Frame::Event(shutdown)).unwrap(), frame_of("good_event_shutdown.json"));

        let invoke = frame_of("good_req_node_invoke.json");
        let params: NodeInvokeParams = serde_json::from_value(invoke["params"].clone()).unwrap();
        let forwarded =
            NodeInvokeRequest::forward("3ca5542b-c710-477b-93f4-928f9bd12046", &params, Some(14994)).unwrap();
        assert_eq!(to_value(&forwarded).unwrap(), frame_of("good_event_node_invoke_request.json")["payload"]);

        let result = frame_of("good_req_node_invoke_result.json");
        let result: NodeInvokeResultParams = serde_json::from_value(result["params"].clone()).unwrap();
        let response = ResponseFrame::success_with(
            "2:8ff504ed-690d-4cde-8979-07932f161fc6",
            &NodeInvokeResponse::from_result(&result, &params.command).unwrap(),
        )
        .unwrap();
        assert_eq!(to_value(&Frame::Response(response)).unwrap(), frame_of("good_res_node_invoke.json"));

        let ack = ResponseFrame::success_with("12:dbf2abce-20b7-4b09-86d6-c7f2b9b62342", &OkAck { ok: true }).unwrap();
        assert_eq!(to_value(&Frame::Response(ack)).unwrap(), frame_of("good_res_node_invoke_result_ack.json"));
    }

    #[test]
    fn hivegate_pairing_required_extends_the_trace_shape_with_wait_then_retry() {
        let trace = frame_of("good_res_pairing_required.json");
        let details = PairingRequiredDetails::new(
            PairingReason::NotPaired,
            "a2afb3d2-1b96-483c-b922-8a2a130b25d2",
            "ac44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89",
            Role::Node,
        );
        let response = ResponseFrame::failure(trace["id"].as_str().unwrap(), details.to_error_shape());
        let mut expected = trace.clone();
        expected["error"]["retryable"] = json!(true);
        expected["error"]["details"]["recommendedNextStep"] = json!("wait_then_retry");
        expected["error"]["details"]["pauseReconnect"] = json!(false);
        assert_eq!(to_value(&Frame::Response(response)).unwrap(), expected);
        let close = Close::pairing_required(PairingReason::NotPaired.message(), &details.request_id);
        assert_eq!(
            close.reason,
            "pairing required: device is not approved yet (requestId: a2afb3d2-1b96-483c-b922-8a2a130b25d2)"
        );
    }

    #[test]
    fn a_built_hello_ok_has_the_trace_shape() {
        let expected = fixtures("good_hello_ok_node.json").pop().unwrap().doc["expected"]["payload"].clone();
        let hello: HelloOk = serde_json::from_value(expected.clone()).unwrap();
        let rebuilt =
            HelloOk::new(hello.server.clone(), hello.features.clone(), hello.snapshot.clone(), hello.auth.clone());
        assert_eq!(to_value(&rebuilt).unwrap(), expected);
        assert_eq!(rebuilt.policy, Policy::default());
        assert!(format!("{:?}", rebuilt.auth).contains("<redacted>"), "device tokens never print");
    }

    #[test]
    fn hello_ok_written_in_one_pass_is_the_frame_built_as_a_tree() {
        let payload = fixtures("good_hello_ok_node.json").pop().unwrap().doc["expected"]["payload"].clone();
        let hello: HelloOk = serde_json::from_value(payload.clone()).unwrap();
        let id = "1:8f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f";
        let one_pass = ResponseFrame::encode_success(id, &hello).unwrap();
        let as_tree = Frame::Response(ResponseFrame::success_with(id, &hello).unwrap()).encode().unwrap();
        let read: Value = serde_json::from_str(&one_pass).unwrap();
        assert_eq!(read, serde_json::from_str::<Value>(&as_tree).unwrap());
        assert_eq!(read, json!({"type": "res", "id": id, "ok": true, "payload": payload}));
        match serde_json::from_str::<Frame>(&one_pass).unwrap() {
            Frame::Response(response) => assert!(response.ok && response.id == id && response.error.is_none()),
            other => panic!("not a response: {other:?}"),
        }
    }
}
