//! Registry auth and storage against the real CNCF Distribution registry: the Bearer flow
//! with a token server of the test's own, and blobs redirected to a storage server.

mod common;
#[path = "common/registry.rs"]
mod registry;
use common::*;
use registry::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
