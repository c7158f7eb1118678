//! Headless Chromium driven over the DevTools protocol, for tests/dashboard.rs.
//!
//! [`Browser::launch`] starts Debian's `chromium` headless in its own process group with a
//! throwaway profile and `--remote-debugging-port=0`, reads the port it chose from
//! `<profile>/DevToolsActivePort`, and opens the browser's DevTools WebSocket
//! (tokio-tungstenite). [`Browser::page`] creates a tab and attaches to it in flattened
//! mode, so every command for the tab goes over that one socket with its `sessionId`.
//! A [`Page`] navigates, evaluates JavaScript (`Runtime.evaluate`, by value), waits for a
//! condition by polling the DOM until a deadline, clicks like a user
//! (`Input.dispatchMouseEvent` at the element's centre), types, and takes screenshots.
//! Console messages and uncaught exceptions are collected to explain a failed wait.
//! Dropping the browser kills its process group and reaps it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One DevTools command's limit.
const CALL: Duration = Duration::from_secs(20);
/// Console lines kept.
const LOG_LINES: usize = 200;

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// `$HIVEGATE_CHROMIUM`, else `chromium` on PATH.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HIVEGATE_CHROMIUM") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join("chromium")).find(|p| p.is_file())
}

struct Cdp {
    sink: tokio::sync::Mutex<Sink>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next: AtomicU64,
    log: Mutex<Vec<String>>,
}

impl Cdp {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut frame = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            frame["sessionId"] = json!(session);
        }
        self.sink.lock().await.send(Message::Text(frame.to_string())).await.unwrap();
        let answer = tokio::time::timeout(CALL, rx)
            .await
            .unwrap_or_else(|_| panic!("DevTools {method} got no answer within {CALL:?}"))
            .unwrap_or_else(|_| panic!("the DevTools socket closed during {method}"));
        if let Some(error) = answer.get("error") {
            panic!("DevTools {method} failed: {error}");
        }
        answer["result"].clone()
    }

    /// Route answers to their callers; keep console output and exceptions.
    fn receive(&self, frame: Value) {
        if let Some(id) = frame["id"].as_u64() {
            if let Some(tx) = self.pending.lock().unwrap().remove(&id) {
                let _ = tx.send(frame);
            }
            return;
        }
        let line = match frame["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = frame["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].as_str().map_or_else(|| a["value"].to_string(), str::to_string))
                    .collect();
                format!("console.{}: {}", frame["params"]["type"].as_str().unwrap_or("log"), args.join(" "))
            }
            Some("Runtime.exceptionThrown") => {
                let details = &frame["params"]["exceptionDetails"];
                format!("exception: {} {}", details["text"], details["exception"]["description"])
            }
            _ => return,
        };
        let mut log = self.log.lock().unwrap();
        if log.len() < LOG_LINES {
            log.push(line);
        }
    }
}

pub struct Browser {
    process: Child,
    profile: tempfile::TempDir,
    cdp: Arc<Cdp>,
}

impl Browser {
    pub async fn launch(path: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let mut command = Command::new(path);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1440,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut process = command.spawn().unwrap();
        let active = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoint = loop {
            let text = std::fs::read_to_string(&active).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break format!("ws://127.0.0.1:{port}{path}");
            }
            let log = || std::fs::read_to_string(profile.path().join("chromium.log")).unwrap_or_default();
            if let Some(status) = process.try_wait().unwrap() {
                panic!("chromium exited {status} before it listened:\n{}", log());
            }
            assert!(Instant::now() < deadline, "chromium did not write DevToolsActivePort within 30 s:\n{}", log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str()).await.unwrap();
        let (sink, mut stream) = socket.split();
        let cdp = Arc::new(Cdp {
            sink: tokio::sync::Mutex::new(sink),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            log: Mutex::new(Vec::new()),
        });
        let reader = cdp.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    if let Ok(frame) = serde_json::from_str(&text) {
                        reader.receive(frame);
                    }
                }
            }
        });
        Browser { process, profile, cdp }
    }

    /// A new tab, attached, with page and runtime events on.
    pub async fn page(&self) -> Page {
        let target = self.cdp.call(None, "Target.createTarget", json!({"url": "about:blank"})).await;
        let attach = json!({"targetId": target["targetId"], "flatten": true});
        let attached = self.cdp.call(None, "Target.attachToTarget", attach).await;
        let page = Page { cdp: self.cdp.clone(), session: attached["sessionId"].as_str().unwrap().to_string() };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser and its renderer, GPU and zygote processes.
        let group = i32::try_from(self.process.id()).unwrap_or(0);
        if group > 0 {
            // SAFETY: kill(2) with the negative id of the process group this test started.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.process.wait();
        let _ = &self.profile;
    }
}

pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
}

impl Page {
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Navigate and wait (bounded) for the document to load.
    pub async fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("the page to load", "document.readyState === 'complete' || null", Duration::from_secs(20)).await;
    }

    pub async fn reload(&self) {
        self.call("Page.reload", json!({})).await;
        self.wait_for("the page to reload", "document.readyState === 'complete' || null", Duration::from_secs(20))
            .await;
    }

    /// The value of a JavaScript expression (awaited when it is a promise).
    pub async fn eval(&self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("{expression} threw: {details}\n{}", self.console());
        }
        result["result"]["value"].clone()
    }

    /// Evaluate `expression` every 50 ms until it gives something other than null,
    /// false or undefined, and return that; after `within`, fail saying `what`.
    pub async fn wait_for(&self, what: &str, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression).await;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {within:?} waiting for {what}\nconsole:\n{}", self.console());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Click the element `selector` finds as a user would: scrolled into view, pressed
    /// and released at its centre.
    pub async fn click(&self, selector: &str) {
        let find = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()",
            json!(selector)
        );
        let at = self.eval(&find).await;
        let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
            panic!("nothing to click at {selector}\nconsole:\n{}", self.console());
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            let event = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
            self.call("Input.dispatchMouseEvent", event).await;
        }
    }

    /// Type text into the focused element.
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// A PNG of the viewport at `width`×`height`.
    pub async fn screenshot(&self, width: u32, height: u32) -> Vec<u8> {
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", metrics).await;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap()
    }

    /// What the page logged and threw so far.
    pub fn console(&self) -> String {
        self.cdp.log.lock().unwrap().join("\n")
    }
}
