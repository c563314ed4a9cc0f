//! The HTTP API, end to end: `ollamafs serve` on a free loopback port driven by curl (the
//! examples of Ollama's documentation) and by the official `ollama` Python client, and
//! `ollamafs mount --api` sharing the mount's index. Every call is checked on disk.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `ollamafs serve` as a child; dropping it stops it (SIGTERM, then kill).
struct Server {
    child: Option<Child>,
    addr: String,
}

impl Server {
    fn start(store: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ollamafs serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
        let addr = line
            .strip_prefix("Listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child: Some(child), addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM and wait; returns the exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// curl: returns (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output().expect("curl");
    assert!(o.status.success(), "curl {args:?} failed: {}", stderr(&o));
    let out = stdout(&o);
    let (body, code) = out.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Everything in the store that a failed call must not change.
fn snapshot(store: &Path) -> (std::collections::BTreeSet<String>, std::collections::BTreeSet<String>) {
    (manifest_files(store), blobs(store))
}

fn tag_names(s: &Server) -> Vec<String> {
    let (code, body) = curl(&[&s.url("/api/tags")]);
    assert_eq!(code, 200);
    json(&body)["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn documentation_examples_run_as_written_with_curl() {
    let (_dir, store, info) = fixture_store(256 << 20);
    let s = Server::start(&store, &[]);
    let llama_bytes = manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest");
    let blobs_before = blobs(&store);
    let du_before = disk_usage(&store);

    assert_eq!(curl(&[&s.url("/")]), (200, "Ollama is running".into()));
    assert_eq!(curl(&["-I", &s.url("/")]).0, 200);
    let (code, head) = curl(&["-I", &s.url("/api/tags")]);
    assert_eq!(code, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"));
    let (code, v) = curl(&[&s.url("/api/version")]);
    assert_eq!(code, 200);
    assert!(json(&v)["version"].as_str().is_some_and(|v| v.split('.').count() == 3));
    assert_eq!(curl(&[&s.url("/api/ps")]), (200, r#"{"models":[]}"#.into()));

    // "Copy a model": curl http://localhost:11434/api/copy -d '{"source": "llama3.2", "destination": "llama3-backup"}'
    let (code, body) = curl(&[&s.url("/api/copy"), "-d", r#"{"source": "llama3.2", "destination": "llama3-backup"}"#]);
    assert_eq!((code, body.as_str()), (200, ""));
    assert_eq!(manifest_bytes(&store, "registry.ollama.ai/library/llama3-backup/latest"), llama_bytes);
    assert_eq!(blobs(&store), blobs_before, "a copy adds no blob");
    assert!(disk_usage(&store) < du_before + (1 << 20), "a copy adds no data");

    // The issue's example: over an existing model, which is replaced; tags shows the copy.
    let (code, _) =
        curl(&[&s.url("/api/copy"), "-d", r#"{"source":"llama3.2:latest","destination":"myuser/llama3.2:custom"}"#]);
    assert_eq!(code, 200);
    assert_eq!(manifest_bytes(&store, "registry.ollama.ai/myuser/llama3.2/custom"), llama_bytes);
    let mut expected = blobs_before.clone();
    expected.remove(&info.system_custom.blob_file_name()); // only the replaced model used it
    assert_eq!(blobs(&store), expected);
    let (_, tags) = curl(&[&s.url("/api/tags")]);
    let tags = json(&tags);
    let by_name = |n: &str| tags["models"].as_array().unwrap().iter().find(|m| m["name"] == n).cloned();
    let custom = by_name("myuser/llama3.2:custom").expect("copy listed");
    let llama = by_name("llama3.2:latest").unwrap();
    assert_eq!(custom["digest"], llama["digest"]);
    assert_eq!(custom["model"], "myuser/llama3.2:custom");
    assert_eq!(custom["size"], llama["size"]);
    assert_eq!(custom["details"]["family"], "llama");
    assert!(by_name("llama3-backup:latest").is_some());

    // Show.
    let (code, body) = curl(&[&s.url("/api/show"), "-d", r#"{"model": "llama3.2"}"#]);
    assert_eq!(code, 200);
    let show = json(&body);
    assert_eq!(show["license"], format!("{}\n{}", fixture::LICENSE_1, fixture::LICENSE_2));
    assert_eq!(show["template"], fixture::TEMPLATE);
    assert!(show["modelfile"].as_str().unwrap().contains(&info.big_model.blob_file_name()));
    assert_eq!(show["details"]["quantization_level"], "Q4_K_M");
    assert_eq!(show["model_info"]["general.architecture"], "llama");

    // "Delete a model": curl -X DELETE http://localhost:11434/api/delete -d '{"model": "llama3:13b"}'
    let (code, body) = curl(&["-X", "DELETE", &s.url("/api/delete"), "-d", r#"{"model": "llama3-backup"}"#]);
    assert_eq!((code, body.as_str()), (200, ""));
    assert!(!store.join("manifests/registry.ollama.ai/library/llama3-backup").exists());
    assert_eq!(blobs(&store), expected, "the weights are still used by llama3.2");

    // Errors: Ollama's status and words, and the store untouched.
    let before = snapshot(&store);
    let cases: &[(&[&str], u16, &str)] = &[
        (&["-d", r#"{"source":"nope","destination":"x"}"#], 404, "model 'nope' not found"),
        (&["-d", r#"{"source":"bad name","destination":"x"}"#], 400, r#"source \"bad name\" is invalid"#),
        (&["-d", r#"{"source":"llama3.2","destination":"a/b/c/d"}"#], 400, r#"destination \"a/b/c/d\" is invalid"#),
        (&["-d", ""], 400, "missing request body"),
        (&["-d", "{oops"], 400, "key must be a string"),
    ];
    for (args, status, words) in cases {
        let mut a = vec![s.url("/api/copy")];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, body) = curl(&a);
        assert_eq!(code, *status, "{args:?}: {body}");
        assert!(body.starts_with(r#"{"error":""#) && body.contains(words), "{args:?}: {body}");
    }
    let (code, body) = curl(&["-X", "DELETE", &s.url("/api/delete"), "-d", r#"{"model":"gone:1"}"#]);
    assert_eq!((code, body.as_str()), (404, r#"{"error":"model 'gone:1' not found"}"#));
    let (code, body) = curl(&[&s.url("/api/show"), "-d", r#"{"model":"gone"}"#]);
    assert_eq!((code, body.as_str()), (404, r#"{"error":"model 'gone:latest' not found"}"#));
    for path in ["/api/chat", "/api/generate", "/api/embed", "/v1/chat/completions"] {
        let (code, body) = curl(&[&s.url(path), "-d", r#"{"model":"llama3.2"}"#]);
        assert_eq!(code, 501, "{path}");
        assert!(json(&body)["error"].as_str().unwrap().contains("ollamafs manages the model store"), "{body}");
    }
    // `ollama rm` asks to unload first: nothing is loaded, so that is done at once.
    let (code, body) = curl(&[&s.url("/api/generate"), "-d", r#"{"model":"llama3.2","keep_alive":0}"#]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["done_reason"], "unload");
    assert_eq!(curl(&[&s.url("/api/nothing")]).0, 404);
    // A JSON body over the limit is refused before it is read into memory.
    let big = format!(r#"{{"model":"{}"}}"#, "x".repeat(2 << 20));
    let big_path = store.parent().unwrap().join("big.json");
    std::fs::write(&big_path, big).unwrap();
    assert_eq!(curl(&[&s.url("/api/show"), "--data-binary", &format!("@{}", big_path.display())]).0, 413);
    assert_eq!(snapshot(&store), before);
    assert_store_clean(&store);
}

#[test]
fn blob_upload_streams_to_disk_and_checks_the_digest() {
    let (dir, store, _) = fixture_store(1 << 20);
    let s = Server::start(&store, &[]);
    let file = dir.path().join("layer.bin");
    {
        let mut f = std::fs::File::create(&file).unwrap();
        fixture::write_noise(&mut f, 160 << 20).unwrap();
    }
    let digest = format!("sha256:{}", sha256_file(&file));
    let before = blobs(&store);
    assert_eq!(curl(&["-I", &s.url(&format!("/api/blobs/{digest}"))]).0, 404);

    // The wrong digest: 400, and nothing lands in blobs/ or stays in the scratch folder.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (code, body) =
        curl(&["--data-binary", &format!("@{}", file.display()), &s.url(&format!("/api/blobs/{wrong}"))]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("digest mismatch"), "{body}");
    assert_eq!(blobs(&store), before);
    assert_eq!(scratch_files(&store), 0);

    let (code, _) = curl(&["--data-binary", &format!("@{}", file.display()), &s.url(&format!("/api/blobs/{digest}"))]);
    assert_eq!(code, 201);
    assert_eq!(curl(&["-I", &s.url(&format!("/api/blobs/{digest}"))]).0, 200);
    let hex = digest.trim_start_matches("sha256:");
    let blob = store.join("blobs").join(format!("sha256-{hex}"));
    assert_eq!(sha256_file(&blob), hex);
    // Uploading it again is a no-op (200, as Ollama does for a blob it has).
    assert_eq!(
        curl(&["--data-binary", &format!("@{}", file.display()), &s.url(&format!("/api/blobs/{digest}"))]).0,
        200
    );
    // 160 MiB went through a server whose memory never held more than a few chunks.
    let hwm = vm_hwm_kib(s.pid());
    eprintln!("server peak RSS after a 160 MiB upload: {hwm} KiB");
    assert!(hwm < 64 * 1024, "server peak RSS {hwm} KiB: the upload was buffered, not streamed");
    assert_eq!(curl(&["-X", "POST", &s.url("/api/blobs/sha256:xyz")]).0, 400);
    assert_eq!(scratch_files(&store), 0);
}

#[test]
fn concurrent_requests_then_sigterm_stops_cleanly() {
    let (_dir, store, _) = fixture_store(1 << 20);
    let mut s = Server::start(&store, &[]);
    let blobs_before = blobs(&store);
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let url = s.url("/api/copy");
            let tags = s.url("/api/tags");
            std::thread::spawn(move || {
                let body = format!(r#"{{"source":"qwen2.5:0.5b","destination":"team/copy{i}:v1"}}"#);
                let a = curl(&[&url, "-d", &body]);
                let b = curl(&[&tags]);
                (a.0, b.0)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), (200, 200));
    }
    let qwen = manifest_bytes(&store, "registry.ollama.ai/library/qwen2.5/0.5b");
    for i in 0..16 {
        assert_eq!(manifest_bytes(&store, &format!("registry.ollama.ai/team/copy{i}/v1")), qwen);
    }
    assert_eq!(tag_names(&s).iter().filter(|n| n.starts_with("team/copy")).count(), 16);
    assert_eq!(blobs(&store), blobs_before);
    let pid = s.pid();
    let status = s.stop().expect("the server stops on SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(!store.join(".ollamafs").join(pid.to_string()).exists(), "scratch folder removed on exit");
    assert_store_clean(&store);
}

/// The official Python client (`pip install ollama`), as a user's script would call it.
#[test]
fn official_python_client() {
    let Some(python) = python_with_ollama() else { return };
    let (_dir, store, _) = fixture_store(1 << 20);
    let s = Server::start(&store, &[]);
    let run = |code: &str| run_python(&python, &s.addr, code);
    let blobs_before = blobs(&store);

    assert_eq!(run("print(c.copy('qwen2.5:0.5b', 'py/qwen:copy').status)"), "success");
    assert_eq!(
        manifest_bytes(&store, "registry.ollama.ai/py/qwen/copy"),
        manifest_bytes(&store, "registry.ollama.ai/library/qwen2.5/0.5b")
    );
    assert_eq!(blobs(&store), blobs_before);

    let listed = run("print(json.dumps([[m.model, m.digest, m.size, m.details.family] for m in c.list().models]))");
    let listed = json(&listed);
    let rows = listed.as_array().unwrap();
    let copy = rows.iter().find(|r| r[0] == "py/qwen:copy").expect("listed");
    let orig = rows.iter().find(|r| r[0] == "qwen2.5:0.5b").unwrap();
    assert_eq!(copy[1], orig[1]);
    assert_eq!(copy[3], "qwen2");

    let shown = run(
        "r = c.show('py/qwen:copy'); print(json.dumps([r.license, r.details.family, sorted(r.capabilities), 'MESSAGE' in r.modelfile]))",
    );
    assert_eq!(json(&shown), serde_json::json!([fixture::APACHE, "qwen2", ["completion", "vision"], true]));

    assert_eq!(run("print(c.delete('py/qwen:copy').status)"), "success");
    assert!(!store.join("manifests/registry.ollama.ai/py").exists());
    assert_eq!(blobs(&store), blobs_before, "its blobs are shared with qwen2.5");

    let err = run("try:\n  c.show('missing:1')\nexcept ollama.ResponseError as e:\n  print(e.status_code, e.error)\n\
         try:\n  c.delete('missing:1')\nexcept ollama.ResponseError as e:\n  print(e.status_code, e.error)\n\
         try:\n  c.copy('missing:1', 'x')\nexcept ollama.ResponseError as e:\n  print(e.status_code, e.error)\n\
         try:\n  c.chat(model='qwen2.5:0.5b', messages=[{'role':'user','content':'hi'}])\nexcept ollama.ResponseError as e:\n  print(e.status_code)");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        vec![
            "404 model 'missing:1' not found",
            "404 model 'missing:1' not found",
            "404 model 'missing:1' not found",
            "501"
        ]
    );
    assert_store_clean(&store);
}

#[test]
fn mount_api_shares_the_mounts_index() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(256 << 20);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mount::start(&store, &dir.path().join("mnt"), &["--api", &addr]);
    let url = |p: &str| format!("http://{addr}{p}");
    wait_for(&url("/"));
    let blobs_before = blobs(&store);

    // A copy through the API is in the mount at once, byte for byte.
    assert_eq!(curl(&[&url("/api/copy"), "-d", r#"{"source":"llama3.2","destination":"api/llama:copy"}"#]).0, 200);
    assert!(sh_ok(&format!("ls {}", m.p("api").display())).lines().any(|l| l == "llama:copy"));
    assert_eq!(
        std::fs::read(m.p("api/llama:copy/manifest.json")).unwrap(),
        std::fs::read(store.join("manifests/registry.ollama.ai/api/llama/copy")).unwrap()
    );
    assert_eq!(blobs(&store), blobs_before);

    // A copy made in the mount is in /api/tags at once.
    sh_ok(&format!("cp -r {} {}", m.p("qwen2.5:0.5b").display(), m.p("fs-copy:1").display()));
    let (_, tags) = curl(&[&url("/api/tags")]);
    assert!(json(&tags)["models"].as_array().unwrap().iter().any(|x| x["name"] == "fs-copy:1"), "{tags}");

    // A delete through the API leaves the mount at once, even for a path the kernel had
    // just looked up (its cached entry is invalidated); shared blobs stay.
    assert!(m.p("fs-copy:1/manifest.json").exists());
    assert!(m.p("api/llama:copy").is_dir());
    assert_eq!(curl(&["-X", "DELETE", &url("/api/delete"), "-d", r#"{"model":"fs-copy:1"}"#]).0, 200);
    assert!(!m.p("fs-copy:1").exists(), "stale kernel entry after an API delete");
    assert!(!sh_ok(&format!("ls {}", m.mp.display())).lines().any(|l| l == "fs-copy:1"));
    assert_eq!(curl(&["-X", "DELETE", &url("/api/delete"), "-d", r#"{"model":"api/llama:copy"}"#]).0, 200);
    assert!(!m.p("api").exists(), "the emptied prefix folder is gone at once too");
    assert_eq!(blobs(&store), blobs_before);
    drop(m);
    // The API stopped with the mount.
    assert!(Command::new("curl").args(["-s", &url("/")]).output().map(|o| !o.status.success()).unwrap_or(true));
    assert_store_clean(&store);
}

// ----- helpers -----

fn sha256_file(p: &Path) -> String {
    let out = sh_ok(&format!("sha256sum {}", p.display()));
    out.split_whitespace().next().unwrap().to_string()
}

fn scratch_files(store: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(store.join(".ollamafs")) {
        for d in rd.flatten() {
            n += std::fs::read_dir(d.path()).map(|r| r.count()).unwrap_or(0);
        }
    }
    n
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(url: &str) {
    let t0 = Instant::now();
    while !Command::new("curl").args(["-sf", url]).output().is_ok_and(|o| o.status.success()) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{url} did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Python that can `import ollama`: $OLLAMAFS_TEST_PYTHON, the venv `.ci/run` makes in
/// target/pyvenv, or python3. Under CI=true it must exist; elsewhere the test skips loudly.
fn python_with_ollama() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("OLLAMAFS_TEST_PYTHON") {
        candidates.push(p.into());
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"));
    candidates.push("python3".into());
    for c in candidates {
        if Command::new(&c).args(["-c", "import ollama"]).output().is_ok_and(|o| o.status.success()) {
            return Some(c);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but no Python with the `ollama` package (.ci/run installs it into target/pyvenv)");
    }
    skip("PYTHON CLIENT TEST: `pip install ollama` (or run .ci/run)");
    None
}

/// The copy documentation's "Create Backup Before Modification", as written, with curl:
/// copy `llama3.2` to `llama3.2-backup`, then `/api/create` the original from itself with a
/// new system prompt. The backup keeps the old model; no weights blob is added.
#[test]
fn backup_then_modify_with_create() {
    let (_dir, store, info) = fixture_store(1 << 20);
    let s = Server::start(&store, &[]);
    let before = manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest");
    let weights_before = blobs(&store).len();
    let (code, _) = curl(&[&s.url("/api/copy"), "-d", r#"{"source": "llama3.2", "destination": "llama3.2-backup"}"#]);
    assert_eq!(code, 200);
    let (code, body) = curl(&[
        &s.url("/api/create"),
        "-d",
        r#"{"model": "llama3.2", "from": "llama3.2", "system": "New system prompt"}"#,
    ]);
    assert_eq!(code, 200, "{body}");
    let statuses: Vec<serde_json::Value> = body.lines().map(json).collect();
    assert_eq!(statuses.last().unwrap()["status"], "success");
    assert!(statuses.iter().any(|s| s["status"].as_str().unwrap().starts_with("creating new layer sha256:")));
    assert!(statuses.iter().any(|s| s["status"] == "writing manifest"));
    assert_eq!(manifest_bytes(&store, "registry.ollama.ai/library/llama3.2-backup/latest"), before);
    let m: serde_json::Value =
        serde_json::from_str(&manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest")).unwrap();
    assert_eq!(m["layers"][0]["digest"], info.big_model.prefixed(), "the same weights");
    let sys = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.ollama.image.system")
        .unwrap();
    let d = sys["digest"].as_str().unwrap().replace(':', "-");
    assert_eq!(std::fs::read_to_string(store.join("blobs").join(d)).unwrap(), "New system prompt");
    assert_eq!(blobs(&store).len(), weights_before + 1, "one new blob: the system prompt");
    // Not streamed: one object. Quantizing is refused with a clear 400.
    let (code, body) = curl(&[&s.url("/api/create"), "-d", r#"{"model": "x:1", "from": "llama3.2", "stream": false}"#]);
    assert_eq!((code, json(&body)), (200, serde_json::json!({"status": "success"})));
    let (code, body) =
        curl(&[&s.url("/api/create"), "-d", r#"{"model": "x:2", "from": "llama3.2", "quantize": "q4_K_M"}"#]);
    assert_eq!(code, 400);
    assert!(json(&body)["error"].as_str().unwrap().contains("quantization is not supported"));
    let (code, body) = curl(&[&s.url("/api/create"), "-d", r#"{"model": "x:3", "from": "nope"}"#]);
    assert_eq!((code, json(&body)["error"].as_str().unwrap().to_string()), (404, "model 'nope' not found".to_string()));
    assert_verifies(&store);
}

/// The official Python client's `create(model=…, from_=…, system=…)`, unchanged.
#[test]
fn python_client_creates() {
    let Some(python) = python_with_ollama() else { return };
    let (_dir, store, _) = fixture_store(1 << 20);
    let s = Server::start(&store, &[]);
    let out =
        run_python(&python, &s.addr, "print(c.create(model='pirate:v1', from_='llama3.2', system='Arr.').status)");
    assert_eq!(out, "success");
    assert!(manifest_files(&store).contains("registry.ollama.ai/library/pirate/v1"));
    assert_verifies(&store);
}

/// Run Python code with the official client connected as `c` (and `json` imported); its output.
fn run_python(python: &Path, addr: &str, code: &str) -> String {
    let script = format!("import ollama, json\nc = ollama.Client(host='http://{addr}')\n{code}");
    let o = Command::new(python).arg("-c").arg(&script).output().expect("python");
    assert!(o.status.success(), "python failed:\n{}\n{}", stdout(&o), stderr(&o));
    stdout(&o).trim().to_string()
}
