//! A small Chrome DevTools Protocol client for the browser check (`site.rs`): it starts Chromium
//! headless with `--remote-debugging-pipe` and speaks CDP over that pipe (NUL-terminated JSON
//! messages: the browser reads commands on its fd 3 and writes answers and events on fd 4).
//!
//! Only what a reader does is implemented: open a page as a new visitor, wait until the network
//! is idle, evaluate JavaScript, click, type, press a key, take a full-page screenshot. Every page
//! records what went wrong while it was open: uncaught exceptions, `console.error` and error log
//! entries, failed requests.

use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long Chromium may take to answer one command.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a navigation may take, until the network is idle.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The network is idle when no request has been in flight for this long (Playwright's
/// `networkidle` uses the same 500 ms).
const IDLE: Duration = Duration::from_millis(500);

/// A headless Chromium with its own temporary profile, stopped when dropped.
pub struct Chromium {
    child: Child,
    commands: ChildStdin,
    messages: Receiver<Value>,
    /// Events that arrived while waiting for the answer to a command.
    events: VecDeque<Value>,
    next_id: u64,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts `exe` with `args` (plus headless mode, the pipe and a fresh profile).
    pub fn launch(exe: &Path, args: &[&str]) -> Result<Chromium, String> {
        let profile = tempfile::tempdir().map_err(|e| format!("temporary profile: {e}"))?;
        let log = profile.path().join("chromium.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        // The pipe is the child's stdin and stdout moved to fds 3 and 4 by the shell, so no
        // descriptor is ever open without close-on-exec in this (multi-threaded) test process.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg("sh")
            .arg(exe)
            .args(args)
            .arg("--headless")
            .arg("--remote-debugging-pipe")
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("data").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let commands = child.stdin.take().unwrap();
        let output = child.stdout.take().unwrap();
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(output);
            loop {
                let mut buf = Vec::new();
                match reader.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                let message = serde_json::from_slice(&buf).unwrap_or_else(
                    |e| json!({"method": "cdp.unreadable", "params": {"error": e.to_string()}}),
                );
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        let mut browser = Chromium {
            child,
            commands,
            messages,
            events: VecDeque::new(),
            next_id: 0,
            log,
            _profile: profile,
        };
        browser.call(None, "Browser.getVersion", json!({}))?;
        Ok(browser)
    }

    /// The browser's product and version, e.g. `Chrome/156.0.8078.114`.
    pub fn version(&mut self) -> Result<String, String> {
        let v = self.call(None, "Browser.getVersion", json!({}))?;
        Ok(v["product"].as_str().unwrap_or("?").to_string())
    }

    /// What Chromium wrote on stderr, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("\nChromium's stderr (last lines):\n{tail}")
    }

    /// Sends one command (to a page's session, or to the browser) and returns its result.
    /// Events that arrive meanwhile are kept for [`Chromium::event`].
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        if let Err(e) = self
            .commands
            .write_all(&bytes)
            .and_then(|()| self.commands.flush())
        {
            return Err(format!(
                "{method}: cannot write to Chromium: {e}{}",
                self.log_tail()
            ));
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut m = match self.messages.recv_timeout(left) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("{method}: no answer within {CALL_TIMEOUT:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{method}: Chromium exited{}", self.log_tail()));
                }
            };
            if m["id"].as_u64() == Some(id) {
                if let Some(e) = m.get("error") {
                    return Err(format!(
                        "{method}: {}",
                        e["message"].as_str().unwrap_or("?")
                    ));
                }
                return Ok(m["result"].take());
            }
            if m.get("method").is_some() {
                self.events.push_back(m);
            }
        }
    }

    /// The next event, waiting at most `timeout` for one; `Err` when Chromium is gone.
    fn event(&mut self, timeout: Duration) -> Result<Option<Value>, String> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        match self.messages.recv_timeout(timeout) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(format!("Chromium exited{}", self.log_tail()))
            }
        }
    }

    /// Opens a blank page of `width` x `height` CSS pixels in a browser context of its own (its
    /// own cookies and local storage, as a new visitor).
    pub fn new_page(&mut self, width: u32, height: u32) -> Result<Page<'_>, String> {
        let context =
            self.call(None, "Target.createBrowserContext", json!({}))?["browserContextId"]
                .as_str()
                .ok_or("no browserContextId")?
                .to_string();
        let target = self.call(
            None,
            "Target.createTarget",
            json!({"url": "about:blank", "browserContextId": context}),
        )?["targetId"]
            .as_str()
            .ok_or("no targetId")?
            .to_string();
        let session = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_string();
        let mut page = Page {
            browser: self,
            session,
            target,
            context,
            url: String::new(),
            errors: Vec::new(),
            requests: HashMap::new(),
            last_network: Instant::now(),
            loader: None,
            loaded: false,
            status: None,
        };
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            page.call(domain, json!({}))?;
        }
        page.call("Page.setLifecycleEventsEnabled", json!({"enabled": true}))?;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(page)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.call(None, "Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One open tab, closed (with its browser context) when dropped.
pub struct Page<'b> {
    browser: &'b mut Chromium,
    session: String,
    target: String,
    context: String,
    /// The URL last navigated to.
    url: String,
    /// What went wrong on the page (see [`Page::take_errors`]).
    errors: Vec<Vec<Part>>,
    /// Requests in flight, by id, with their URL.
    requests: HashMap<String, String>,
    last_network: Instant,
    /// The loader (document request id) of the current navigation.
    loader: Option<String>,
    loaded: bool,
    /// The HTTP status of the current document.
    status: Option<u64>,
}

impl Page<'_> {
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.browser.call(Some(&session), method, params)
    }

    /// Handles the events that arrive within `wait` (at least the ones already queued).
    fn pump(&mut self, wait: Duration) -> Result<(), String> {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.browser.event(left)? {
                Some(e) => self.handle(&e),
                None => return Ok(()),
            }
        }
    }

    fn error(&mut self, message: String) {
        self.errors.push(vec![Part::Text(message)]);
    }

    fn handle(&mut self, e: &Value) {
        if e["sessionId"].as_str() != Some(self.session.as_str()) {
            return;
        }
        let p = &e["params"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        match e["method"].as_str().unwrap_or_default() {
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let mut error = vec![Part::Text("pageerror:".into())];
                if d["exception"]["subtype"] != "error" {
                    // "Uncaught (in promise)" and the like: what was thrown is not an Error.
                    error.push(Part::Text(text(&d["text"])));
                }
                error.extend(d.get("exception").map(Part::of));
                self.errors.push(error);
            }
            "Runtime.consoleAPICalled" if p["type"] == "error" => {
                let mut error = vec![Part::Text("console:".into())];
                error.extend(p["args"].as_array().into_iter().flatten().map(Part::of));
                self.errors.push(error);
            }
            // The browser's own messages (a resource that did not load, a CSP violation...). The
            // 404 status of a missing page is logged against that page's URL: expected there.
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                let entry = &p["entry"];
                if !(entry["source"] == "network" && entry["url"].as_str() == Some(&self.url)) {
                    self.error(format!(
                        "console: {} ({})",
                        text(&entry["text"]),
                        text(&entry["url"])
                    ));
                }
            }
            "Inspector.targetCrashed" => self.error("the page crashed".into()),
            "Network.requestWillBeSent" => {
                self.last_network = Instant::now();
                self.requests
                    .insert(text(&p["requestId"]), text(&p["request"]["url"]));
            }
            "Network.responseReceived" => {
                self.last_network = Instant::now();
                // The document's own request has the id of its loader.
                let id = p["requestId"].as_str();
                if id.is_some() && id == self.loader.as_deref() {
                    self.status = p["response"]["status"].as_u64();
                }
            }
            "Network.loadingFinished" => {
                self.last_network = Instant::now();
                self.requests
                    .remove(p["requestId"].as_str().unwrap_or_default());
            }
            "Network.loadingFailed" => {
                self.last_network = Instant::now();
                let url = self
                    .requests
                    .remove(p["requestId"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                self.error(format!(
                    "requestfailed: {url} {}{}",
                    text(&p["errorText"]),
                    if p["canceled"] == true {
                        " (canceled)"
                    } else {
                        ""
                    }
                ));
            }
            "Page.lifecycleEvent"
                if p["name"] == "load" && self.loader.as_deref() == p["loaderId"].as_str() =>
            {
                self.loaded = true;
            }
            "cdp.unreadable" => {
                self.error(format!("unreadable CDP message: {}", text(&p["error"])))
            }
            _ => {}
        }
    }

    /// What went wrong on the page so far, one line each: `pageerror: …` (an uncaught exception
    /// or rejected promise), `console: …` (`console.error` or an error the browser logged, such as
    /// a resource that did not load), `requestfailed: URL REASON`.
    pub fn take_errors(&mut self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for error in std::mem::take(&mut self.errors) {
            let mut words = Vec::new();
            for part in error {
                words.push(match part {
                    Part::Text(t) => t,
                    // An object that is not an Error is described only as "Object": ask the page
                    // what it says.
                    Part::Object { id, description } => {
                        let read = self.call(
                            "Runtime.callFunctionOn",
                            json!({
                                "objectId": id,
                                "returnByValue": true,
                                "functionDeclaration": "function () { try { return String(this.message ?? this.str ?? JSON.stringify(this)); } catch (e) { return String(this); } }",
                            }),
                        )?;
                        match read["result"]["value"].as_str() {
                            Some(s) => format!("{description} {s}"),
                            None => description,
                        }
                    }
                });
            }
            out.push(words.join(" "));
        }
        Ok(out)
    }

    /// Loads `url` and waits for its load event and then for the network to be idle. Returns
    /// the HTTP status of the document.
    pub fn goto(&mut self, url: &str) -> Result<Option<u64>, String> {
        self.url = url.to_string();
        self.loaded = false;
        self.status = None;
        let nav = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
            return Err(format!("cannot load {url}: {e}"));
        }
        self.loader = nav["loaderId"].as_str().map(str::to_string);
        let deadline = Instant::now() + LOAD_TIMEOUT;
        loop {
            self.pump(Duration::from_millis(50))?;
            if self.loaded && self.requests.is_empty() && self.last_network.elapsed() >= IDLE {
                return Ok(self.status);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{url}: not loaded with the network idle within {LOAD_TIMEOUT:?} \
                     (load event: {}, in flight: {:?})",
                    self.loaded,
                    self.requests.values().collect::<Vec<_>>()
                ));
            }
        }
    }

    /// The value of a JavaScript expression (a promise is awaited), as JSON.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let mut r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(d) = r.get("exceptionDetails") {
            let message = d["exception"]["description"]
                .as_str()
                .or(d["text"].as_str())
                .unwrap_or("?");
            return Err(format!("{expression}: {message}"));
        }
        self.pump(Duration::ZERO)?;
        Ok(r["result"]["value"].take())
    }

    /// Waits until `expression` is `true`; returns whether it became so within `timeout`.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression)? == Value::Bool(true) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            self.pump(Duration::from_millis(50))?;
        }
    }

    /// Clicks the middle of the element `selector` finds, as a mouse would: the element is
    /// scrolled into view and must be visible and not covered by another element.
    pub fn click(&mut self, selector: &str) -> Result<(), String> {
        let sel = serde_json::to_string(selector).unwrap();
        let at = self.eval(&format!(
            "(() => {{
                const e = document.querySelector({sel});
                if (!e) return 'no element';
                e.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = e.getBoundingClientRect();
                if (r.width === 0 || r.height === 0) return 'not visible';
                const x = r.left + r.width / 2, y = r.top + r.height / 2;
                const hit = document.elementFromPoint(x, y);
                if (!hit || !(hit === e || e.contains(hit))) return 'covered by ' + (hit && hit.outerHTML.slice(0, 80));
                return {{x, y}};
            }})()"
        ))?;
        let (Some(x), Some(y)) = (at["x"].as_f64(), at["y"].as_f64()) else {
            return Err(format!("cannot click {selector}: {at}"));
        };
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )?;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            )?;
        }
        self.pump(Duration::ZERO)
    }

    /// Types `text` into the focused element, one key press per character.
    pub fn type_text(&mut self, text: &str) -> Result<(), String> {
        for c in text.chars() {
            let key = c.to_string();
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": "keyDown", "key": key, "text": key, "unmodifiedText": key}),
            )?;
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": "keyUp", "key": key}),
            )?;
        }
        self.pump(Duration::ZERO)
    }

    /// Presses and releases the Escape key.
    pub fn press_escape(&mut self) -> Result<(), String> {
        for kind in ["rawKeyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27}),
            )?;
        }
        self.pump(Duration::ZERO)
    }

    /// Saves a PNG of the whole page (not only the viewport) to `path`.
    pub fn screenshot_full_page(&mut self, path: &Path) -> Result<(), String> {
        let m = self.call("Page.getLayoutMetrics", json!({}))?;
        let size = &m["cssContentSize"];
        let (Some(w), Some(h)) = (size["width"].as_f64(), size["height"].as_f64()) else {
            return Err(format!("no content size in {m}"));
        };
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": w.ceil(), "height": h.ceil(), "scale": 1},
            }),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot: {e}"))?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A piece of an error message: text, or an object of the page, read when the errors are taken.
enum Part {
    Text(String),
    Object { id: String, description: String },
}

impl Part {
    /// A CDP `RemoteObject`: its value, an Error's description (message and stack), or a
    /// reference to read later.
    fn of(o: &Value) -> Part {
        let description = o["description"].as_str().unwrap_or_default().to_string();
        match (&o["value"], o["objectId"].as_str()) {
            (Value::String(s), _) => Part::Text(s.clone()),
            (Value::Null, Some(id)) if o["subtype"] != "error" => Part::Object {
                id: id.to_string(),
                description,
            },
            (Value::Null, _) if o["type"] == "undefined" => Part::Text("undefined".into()),
            (Value::Null, _) if o["subtype"] == "null" => Part::Text("null".into()),
            (Value::Null, _) => Part::Text(description),
            (v, _) => Part::Text(v.to_string()),
        }
    }
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        let target = self.target.clone();
        let context = self.context.clone();
        let _ = self
            .browser
            .call(None, "Target.closeTarget", json!({"targetId": target}));
        let _ = self.browser.call(
            None,
            "Target.disposeBrowserContext",
            json!({"browserContextId": context}),
        );
        // Events of the closed page are of no use to the next one.
        self.browser.events.clear();
    }
}
