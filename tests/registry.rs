//! `ollamafs pull` / `push` against the real CNCF Distribution registry (Debian's
//! `docker-registry`), started here on a free loopback port over a temporary folder (and
//! once with htpasswd Basic auth, once with Bearer tokens from a token server of the test's
//! own). Everything is checked on disk: manifest bytes, blobs,
//! bytes moved, `ollamafs verify`.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A registry on loopback; stopped (and its folder removed) when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    data: PathBuf,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Option<Registry> {
        let dir = tempfile::tempdir().unwrap();
        let auth = match htpasswd {
            Some(line) => {
                fs::write(dir.path().join("htpasswd"), format!("{line}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display())
            }
            None => String::new(),
        };
        Registry::start_with(dir, &auth)
    }

    /// A registry with `auth` (a YAML `auth:` section, or nothing) in its config.
    fn start_with(dir: tempfile::TempDir, auth: &str) -> Option<Registry> {
        if !have_tool("docker-registry", "docker-registry") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.path().join("data");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                data.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry { child, port, _dir: dir, data };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(15), "the registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }

    fn name(&self, rest: &str) -> String {
        format!("127.0.0.1:{}/{rest}", self.port)
    }

    /// The registry's copy of a blob.
    fn blob_file(&self, hex: &str) -> PathBuf {
        self.data.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `cmd` is here; outside CI a missing tool skips the test loudly, under CI it fails.
fn have_tool(cmd: &str, package: &str) -> bool {
    let have = Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").is_err(), "CI=true but no {cmd}: the registry tests must run");
        eprintln!("\n*** SKIPPING registry test: no {cmd} (apt-get install {package}) ***\n");
    }
    have
}

/// A fixture store (weights of `big` bytes) whose `model`, copied to `repo` on `reg`, is
/// pushed there anonymously: `(guard, store, fixture info, full name)`.
fn pushed(
    reg: &Registry,
    big: u64,
    model: &str,
    repo: &str,
) -> (tempfile::TempDir, PathBuf, ollamafs::fixture::Info, String) {
    let (d, src, info) = fixture_store(big);
    let name = reg.name(repo);
    assert!(ollamafs(&src, &["cp", model, &name]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    (d, src, info, name)
}

/// `ollamafs ARGS --store STORE NAME` with alice's credentials in the environment.
fn as_alice(args: &[&str], store: &Path, name: &str) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--store")
        .arg(store)
        .arg(name)
        .env("OLLAMAFS_REGISTRY_USER", "alice")
        .env("OLLAMAFS_REGISTRY_PASSWORD", "s3cret")
        .output()
        .unwrap()
}

fn manifest_path_of(store: &Path, name: &str) -> PathBuf {
    let n = ollamafs::name::Name::parse(name).unwrap();
    store.join("manifests").join(n.manifest_path())
}

/// (downloaded, uploaded) from the command's last stderr line.
fn moved(o: &std::process::Output) -> (u64, u64) {
    let e = stderr(o);
    let line = e.lines().rev().find(|l| l.contains("bytes downloaded")).unwrap_or_else(|| panic!("{e}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

#[test]
fn push_then_pull_gives_the_same_bytes_and_a_second_pull_downloads_nothing() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, info) = fixture_store(64 << 20);
    let name = reg.name("team/llama3.2:v1");
    assert!(ollamafs(&src, &["cp", "llama3.2", &name]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("pushing manifest\nsuccess\n"), "{}", stdout(&o));
    assert!(moved(&o).1 >= info.big_size, "the weights were uploaded");

    let (_d2, empty) = empty_store();
    let o = ollamafs(&empty, &["pull", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(manifest_path_of(&empty, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    for b in blobs(&empty) {
        assert_eq!(
            fs::read(empty.join("blobs").join(&b)).unwrap(),
            fs::read(src.join("blobs").join(&b)).unwrap(),
            "{b}"
        );
    }
    assert_verifies(&empty);
    let o = ollamafs(&empty, &["pull", "--insecure", &name]);
    assert!(o.status.success());
    assert_eq!(moved(&o).0, 0, "a second pull downloads no blob byte");

    // A model whose blobs the registry holds in another repository: nothing is uploaded.
    let other = reg.name("other/copy:v2");
    assert!(ollamafs(&src, &["cp", "llama3.2", &other]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &other]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(moved(&o).1, 0, "cross-repository mount: {}", stdout(&o));

    // A missing model: Ollama's words.
    let o = ollamafs(&empty, &["pull", "--insecure", &reg.name("team/nope:v1")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pull model manifest: file does not exist"), "{}", stderr(&o));
}

/// A blob damaged on the registry's disk fails the pull, names the digest and leaves
/// nothing behind (no manifest, no blob the pull added, no partial file).
#[test]
fn a_corrupted_blob_fails_the_pull_and_leaves_nothing() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, _, name) = pushed(&reg, 8 << 20, "qwen2.5:0.5b", "team/qwen:bad");
    let m: serde_json::Value = serde_json::from_slice(&fs::read(manifest_path_of(&src, &name)).unwrap()).unwrap();
    let victim = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let f = reg.blob_file(&victim);
    let mut bytes = fs::read(&f).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&f, bytes).unwrap();
    let (_d, empty) = empty_store();
    let o = ollamafs(&empty, &["pull", "--insecure", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&victim), "names the digest: {}", stderr(&o));
    assert!(manifest_files(&empty).is_empty(), "no manifest");
    assert!(blobs(&empty).is_empty(), "no blob: {:?}", blobs(&empty));
    let partial: Vec<_> = fs::read_dir(empty.join(".ollamafs/pull")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(partial.is_empty(), "no partial file");
}

/// An interrupted pull resumes where it stopped: a partial download is continued with a
/// Range request (only the rest is downloaded), and a pull killed with -9 completes.
#[test]
fn an_interrupted_pull_resumes() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, info, name) = pushed(&reg, 256 << 20, "llama3.2", "team/big:v1");
    let (_d, dest) = empty_store();
    fs::create_dir_all(dest.join(".ollamafs/pull")).unwrap();
    // Half the weights already here, as a pull stopped half-way leaves them.
    let half = info.big_size / 2;
    let blob = fs::read(src.join("blobs").join(info.big_model.blob_file_name())).unwrap();
    fs::write(dest.join(format!(".ollamafs/pull/{}.partial", info.big_model.hex())), &blob[..half as usize]).unwrap();
    drop(blob);
    let o = ollamafs(&dest, &["pull", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (down, _) = moved(&o);
    assert!(down < info.big_size - half + (1 << 20), "downloaded {down}: the half it had was not fetched again");
    assert_verifies(&dest);

    // kill -9 in the middle, then again: complete, verify clean.
    let (_d, dest) = empty_store();
    let mut child = Command::new(bin())
        .args(["pull", "--insecure", "--store"])
        .arg(&dest)
        .arg(&name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A large blob comes in parallel Range parts whose progress is saved beside it: wait
    // until some of it is saved, then kill.
    let state = dest.join(format!(".ollamafs/pull/{}.parts", info.big_model.hex()));
    // (start, end, done) of each part, as the pull saves them.
    let parts = || -> Vec<(u64, u64, u64)> {
        fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    };
    let saved = || -> u64 { parts().iter().map(|p| p.2).sum() };
    let t0 = Instant::now();
    let mut seen_parts = 0;
    while saved() == 0 && t0.elapsed() < Duration::from_secs(10) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        seen_parts = seen_parts.max(parts().len());
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let had = saved();
    assert!(seen_parts > 1 || (had == 0 && !state.exists()), "a large blob is fetched in parallel parts");
    assert!(manifest_files(&dest).is_empty() || had == 0, "no manifest before the pull is whole");
    let o = ollamafs(&dest, &["pull", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(moved(&o).0 <= info.big_size + (1 << 20) - had, "the parts saved before the kill were not fetched again");
    assert_eq!(fs::read(manifest_path_of(&dest, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    assert_verifies(&dest);
}

/// A registry with htpasswd Basic auth: refused without credentials, works with them
/// (from the environment).
#[test]
fn basic_auth_from_the_environment() {
    if !have_tool("htpasswd", "apache2-utils") {
        return;
    }
    let line = sh_ok("htpasswd -Bbn alice s3cret");
    let Some(reg) = Registry::start(Some(line.trim())) else { return };
    let (_d, src, _) = fixture_store(8 << 20);
    let name = reg.name("team/tiny:auth");
    assert!(ollamafs(&src, &["cp", "qwen2.5:0.5b", &name]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let o = as_alice(&["push", "--insecure"], &src, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_d, dest) = empty_store();
    let o = as_alice(&["pull", "--insecure"], &dest, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_verifies(&dest);
}

/// The official Python client's `push(…, insecure=True)` and `pull(…, insecure=True,
/// stream=True)` through `ollamafs serve`, against the registry.
#[test]
fn python_client_pushes_and_pulls_through_serve() {
    let python = [Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"), PathBuf::from("python3")]
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import ollama"]).output().is_ok_and(|o| o.status.success()));
    let Some(python) = python else {
        assert!(std::env::var("CI").is_err(), "CI=true but no Python with the ollama client");
        eprintln!("\n*** SKIPPING: no Python with the ollama client ***\n");
        return;
    };
    let Some(reg) = Registry::start(None) else { return };
    let serve = |store: &Path| -> (Child, String) {
        let mut child = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let addr = line.strip_prefix("Listening on ").and_then(|r| r.split_whitespace().next()).unwrap().to_string();
        (child, addr)
    };
    let py = |addr: &str, code: &str| -> String {
        let script = format!("import ollama\nc = ollama.Client(host='http://{addr}')\n{code}");
        let o = Command::new(&python).arg("-c").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o).trim().to_string()
    };
    let (_d1, src, _) = fixture_store(8 << 20);
    let name = reg.name("py/qwen:v1");
    assert!(ollamafs(&src, &["cp", "qwen2.5:0.5b", &name]).status.success());
    let (mut s1, a1) = serve(&src);
    assert_eq!(py(&a1, &format!("print(c.push('{name}', insecure=True).status)")), "success");
    let _ = s1.kill();
    let _ = s1.wait();
    let (_d, dest) = empty_store();
    let (mut s2, a2) = serve(&dest);
    let out = py(&a2, &format!("print([p.status for p in c.pull('{name}', insecure=True, stream=True)][-1])"));
    let _ = s2.kill();
    let _ = s2.wait();
    assert_eq!(out, "success");
    assert_eq!(fs::read(manifest_path_of(&dest, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    assert_verifies(&dest);
}

/// A new, empty store folder `models` in a temp folder (kept while the guard lives).
fn empty_store() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("models");
    fs::create_dir_all(&store).unwrap();
    (d, store)
}

/// One request the token server answered.
#[derive(Clone, Debug)]
struct TokenRequest {
    service: String,
    scopes: Vec<String>,
    user: Option<String>,
    granted: bool,
}

/// A token server for the registry's Bearer flow (`auth: token`): it gives `alice` (password
/// `s3cret`) an RS256 JWT for the scopes she asks, signed with a key `openssl` made for the
/// test; the registry trusts the key's self-signed certificate. Everyone else gets 401.
/// Each request is recorded.
struct TokenServer {
    port: u16,
    dir: tempfile::TempDir,
    requests: std::sync::Arc<std::sync::Mutex<Vec<TokenRequest>>>,
}

const TOKEN_SERVICE: &str = "ollamafs-test-registry";
const TOKEN_ISSUER: &str = "ollamafs-test-issuer";

impl TokenServer {
    fn start() -> TokenServer {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        sh_ok(&format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ollamafs-test-tokens -keyout '{}' -out '{}' 2>&1",
            key.display(),
            cert.display()
        ));
        let der = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().unwrap();
        assert!(der.status.success());
        let x5c = base64::engine::general_purpose::STANDARD.encode(&der.stdout);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = answer_token_request(conn, &key, &x5c, &log);
            }
        });
        TokenServer { port, dir, requests }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn answer_token_request(
    mut conn: std::net::TcpStream,
    key: &Path,
    x5c: &str,
    log: &std::sync::Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_string());
        }
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let (mut service, mut scopes) = (String::new(), Vec::new());
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "service" => service = percent_decode(v),
            "scope" => scopes.extend(percent_decode(v).split(' ').filter(|s| !s.is_empty()).map(String::from)),
            _ => {}
        }
    }
    let user = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let granted = user.as_deref() == Some("alice:s3cret") && service == TOKEN_SERVICE;
    log.lock().unwrap().push(TokenRequest {
        service: service.clone(),
        scopes: scopes.clone(),
        user: user.clone(),
        granted,
    });
    if !granted {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        return write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "alice", "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl.stdin.take().unwrap().write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?;
    assert!(signature.status.success(), "openssl could not sign");
    let token = format!("{signing_input}.{}", b64(&signature.stdout));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The Bearer flow against the registry with `auth: token`: the client follows the
/// challenge to the token server with the user's credentials, asks for the scopes the
/// registry named (two repositories for a cross-repository mount) and retries with the
/// token; without credentials the token server refuses and nothing is pushed.
#[test]
fn bearer_tokens_from_a_token_server() {
    if !have_tool("openssl", "openssl") {
        return;
    }
    let tokens = TokenServer::start();
    let dir = tempfile::tempdir().unwrap();
    let auth = format!(
        "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
        tokens.realm(),
        tokens.dir.path().join("cert.pem").display()
    );
    let Some(reg) = Registry::start_with(dir, &auth) else { return };
    let (_d, src, info) = fixture_store(8 << 20);
    let name = reg.name("team/tiny:token");
    assert!(ollamafs(&src, &["cp", "llama3.2", &name]).status.success());

    // No credentials: the token server says no, the push stops with a clear error.
    let o = ollamafs(&src, &["push", "--insecure", &name]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let asked = tokens.requests();
    assert!(!asked.is_empty() && asked.iter().all(|r| !r.granted && r.user.is_none()), "{asked:?}");
    assert!(!reg.data.join("docker/registry/v2/repositories/team/tiny/_manifests").exists(), "nothing was pushed");

    let o = as_alice(&["push", "--insecure"], &src, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(moved(&o).1 >= info.big_size, "the weights were uploaded");
    let granted: Vec<TokenRequest> = tokens.requests().into_iter().filter(|r| r.granted).collect();
    assert!(granted.iter().all(|r| r.service == TOKEN_SERVICE));
    assert!(
        granted.iter().any(|r| r.scopes.iter().any(|s| s.starts_with("repository:team/tiny:") && s.contains("push"))),
        "a push token for the repository: {granted:?}"
    );

    let (_d2, dest) = empty_store();
    let o = as_alice(&["pull", "--insecure"], &dest, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(manifest_path_of(&dest, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    assert_eq!(blobs(&dest), blobs(&src).intersection(&blobs(&dest)).cloned().collect());
    assert_verifies(&dest);

    // Another repository: one token for both scopes, so the blobs are mounted, not sent.
    let other = reg.name("other/tiny:token");
    assert!(ollamafs(&src, &["cp", "llama3.2", &other]).status.success());
    let before = tokens.requests().len();
    let o = as_alice(&["push", "--insecure"], &src, &other);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(moved(&o).1, 0, "cross-repository mount with a token: {}", stdout(&o));
    let mount_token = tokens.requests()[before..]
        .iter()
        .any(|r| r.granted && r.scopes.iter().any(|s| s == "repository:team/tiny:pull"));
    assert!(mount_token, "a token that covers the source repository: {:?}", &tokens.requests()[before..]);
}

/// What the blob storage behind a redirect saw.
#[derive(Clone, Debug, Default)]
struct StorageLog {
    /// Answer every request with the whole file, as a server that ignores Range does.
    ignore_ranges: bool,
    requests: u32,
    ranges: u32,
    with_authorization: u32,
}

/// Blob storage the registry redirects to (as its S3, GCS or Azure backends do): serves the
/// registry's own files from `root` over plain HTTP, with byte ranges, and counts what it
/// is asked (a storage host must never see the registry's credentials).
fn start_blob_storage(root: PathBuf) -> (u16, std::sync::Arc<std::sync::Mutex<StorageLog>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(StorageLog::default()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (root, seen) = (root.clone(), seen.clone());
            std::thread::spawn(move || serve_blob(conn, &root, &seen));
        }
    });
    (port, log)
}

fn serve_blob(mut conn: std::net::TcpStream, root: &Path, seen: &std::sync::Mutex<StorageLog>) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Seek, Write};
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let (mut range, mut authorized) = (None, false);
    let ignore_ranges = seen.lock().unwrap().ignore_ranges;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else { continue };
        if k.eq_ignore_ascii_case("range") {
            range = v.trim().strip_prefix("bytes=").filter(|_| !ignore_ranges).map(String::from);
        }
        authorized |= k.eq_ignore_ascii_case("authorization");
    }
    {
        let mut s = seen.lock().unwrap();
        s.requests += 1;
        s.ranges += range.is_some() as u32;
        s.with_authorization += authorized as u32;
    }
    let path = root.join(target.split('?').next().unwrap_or("").trim_start_matches('/'));
    let Ok(mut file) = fs::File::open(&path) else {
        return write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let size = file.metadata()?.len();
    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((a, b)) => {
            let a: u64 = a.parse().unwrap_or(0);
            let b: u64 = if b.is_empty() { size - 1 } else { b.parse::<u64>().unwrap_or(size - 1).min(size - 1) };
            (a, b + 1)
        }
        None => (0, size),
    };
    let status = if range.is_some() {
        format!("206 Partial Content\r\nContent-Range: bytes {start}-{}/{size}", end - 1)
    } else {
        "200 OK".to_string()
    };
    write!(conn, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", end - start)?;
    if method != "HEAD" {
        file.seek(std::io::SeekFrom::Start(start))?;
        std::io::copy(&mut file.take(end - start), &mut conn)?;
    }
    Ok(())
}

/// A registry whose storage answers blob requests with a redirect (the `redirect` storage
/// middleware, as an S3/GCS/Azure backend does): pull and push follow it, large blobs still
/// come in parallel byte ranges, and the storage never sees the user's credentials.
#[test]
fn blobs_come_from_the_storage_the_registry_redirects_to() {
    if !have_tool("htpasswd", "apache2-utils") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (storage_port, storage) = start_blob_storage(dir.path().join("data"));
    let line = sh_ok("htpasswd -Bbn alice s3cret");
    fs::write(dir.path().join("htpasswd"), format!("{}\n", line.trim())).unwrap();
    let config = format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\nmiddleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: http://127.0.0.1:{storage_port}/\n",
        dir.path().join("htpasswd").display()
    );
    let Some(reg) = Registry::start_with(dir, &config) else { return };
    let (_d, src, info) = fixture_store(96 << 20);
    let name = reg.name("team/big:redirected");
    assert!(ollamafs(&src, &["cp", "llama3.2", &name]).status.success());
    let o = as_alice(&["push", "--insecure"], &src, &name);
    assert!(o.status.success(), "{}", stderr(&o));

    let (_d2, dest) = empty_store();
    let o = as_alice(&["pull", "--insecure"], &dest, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(moved(&o).0 >= info.big_size, "the weights were downloaded");
    assert_eq!(fs::read(manifest_path_of(&dest, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    assert_verifies(&dest);
    let seen = storage.lock().unwrap().clone();
    assert!(seen.ranges >= 2, "the weights came from the storage in parallel parts: {seen:?}");
    assert_eq!(seen.with_authorization, 0, "credentials never reach the storage host: {seen:?}");

    // Storage that ignores Range (answers with the whole blob): one stream instead.
    storage.lock().unwrap().ignore_ranges = true;
    let (_d3, dest) = empty_store();
    let o = as_alice(&["pull", "--insecure"], &dest, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(manifest_path_of(&dest, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    assert_verifies(&dest);
    assert!(fs::read_dir(dest.join(".ollamafs/pull")).map_or(true, |d| d.count() == 0), "no partial file left");
}

/// A pull into a store whose disk cannot hold the model stops before downloading anything
/// and says how much is missing; a store folder that does not exist yet is made on the
/// first pull (as Ollama makes `~/.ollama/models`).
#[test]
fn a_pull_the_disk_cannot_hold_is_refused_before_it_starts() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, _) = fixture_store(64 << 20);
    let (big, small) = (reg.name("team/big:v1"), reg.name("team/small:v1"));
    assert!(ollamafs(&src, &["cp", "llama3.2", &big]).status.success());
    assert!(ollamafs(&src, &["cp", "qwen2.5:0.5b", &small]).status.success());
    for name in [&big, &small] {
        let o = ollamafs(&src, &["push", "--insecure", name]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let d = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&d.path().join("small"), 40);
    let store = disk.0.join("models");
    let o = ollamafs(&store, &["pull", "--insecure", &big]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not enough space to pull") && stderr(&o).contains("free in"), "{}", stderr(&o));
    assert_eq!(disk_usage(&disk.0), 0, "nothing was downloaded");
    let o = ollamafs(&store, &["pull", "--insecure", &small]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(manifest_path_of(&store, &small)).unwrap(), fs::read(manifest_path_of(&src, &small)).unwrap());
    assert_verifies(&store);
}
