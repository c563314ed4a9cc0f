//! An OCI Distribution client: one registry, its auth (anonymous, Basic, the Bearer token
//! flow a `WWW-Authenticate` challenge announces), requests with Ollama's headers.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;

use base64::Engine;

use crate::name::Name;
use crate::store::StoreError;

use super::*;

/// A registry session for one repository, with its credentials and token.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    repo: String,
    basic: Option<String>,
    bearer: Option<String>,
}

impl Client {
    pub fn new(name: &Name, insecure: bool) -> Client {
        let scheme = if insecure { "http" } else { "https" };
        Client {
            agent: ureq::AgentBuilder::new().redirects(5).build(),
            base: format!("{scheme}://{}/v2", name.host),
            repo: format!("{}/{}", name.namespace, name.model),
            basic: basic_credentials(&name.host),
            bearer: None,
        }
    }

    pub(super) fn url(&self, rest: &str) -> String {
        if rest.starts_with("http://") || rest.starts_with("https://") {
            rest.to_string()
        } else if rest.starts_with('/') {
            // A Location relative to the registry root.
            let root = self.base.trim_end_matches("/v2");
            format!("{root}{rest}")
        } else {
            format!("{}/{}/{rest}", self.base, self.repo)
        }
    }

    /// Send a request, answering one authentication challenge (Basic or Bearer).
    pub(super) fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&mut dyn FnMut() -> io::Result<Box<dyn Read + Send>>>,
    ) -> Result<ureq::Response, StoreError> {
        let mut body = body;
        for attempt in 0..2 {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(t) = &self.bearer {
                req = req.set("Authorization", &format!("Bearer {t}"));
            } else if let Some(b) = &self.basic {
                req = req.set("Authorization", &format!("Basic {b}"));
            }
            let res = match body.as_mut() {
                Some(make) => req.send(make().map_err(StoreError::Io)?),
                None => req.call(),
            };
            match res {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if attempt == 0 => {
                    let challenge = r.header("WWW-Authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge)?;
                }
                Err(ureq::Error::Status(code, r)) => {
                    let text = r.into_string().unwrap_or_default();
                    return Err(err(format!("{method} {url}: {code} {}", registry_error(&text))));
                }
                Err(ureq::Error::Transport(t)) => {
                    let hint =
                        if url.starts_with("https://") { " (a registry without TLS needs --insecure)" } else { "" };
                    let text = t.to_string();
                    let text = text.strip_prefix(&format!("{url}: ")).unwrap_or(&text).to_string();
                    return Err(err(format!("{method} {url}: {text}{hint}")));
                }
            }
        }
        Err(err(format!("{method} {url}: unauthorized (set OLLAMAFS_REGISTRY_USER and OLLAMAFS_REGISTRY_PASSWORD)")))
    }

    /// Answer `WWW-Authenticate`: Basic with our credentials, or a token from the realm.
    pub(super) fn authenticate(&mut self, challenge: &str) -> Result<(), StoreError> {
        if challenge.to_ascii_lowercase().starts_with("basic") {
            return match self.basic {
                Some(_) => Ok(()),
                None => Err(err(
                    "unauthorized: the registry wants a user and password (OLLAMAFS_REGISTRY_USER/_PASSWORD or ~/.docker/config.json)",
                )),
            };
        }
        let params = challenge_params(challenge);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| err(format!("unsupported authentication challenge {challenge:?}")))?;
        let mut req = self.agent.get(&realm);
        for (k, v) in &params {
            if k == "service" || k == "scope" {
                req = req.query(k, v);
            }
        }
        if let Some(b) = &self.basic {
            req = req.set("Authorization", &format!("Basic {b}"));
        }
        let text = match req.call() {
            Ok(r) => r.into_string()?,
            Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                let who = if self.basic.is_some() { "refused these credentials" } else { "wants a user and password" };
                return Err(err(format!(
                    "unauthorized: the token server {realm} {who} ({code}; OLLAMAFS_REGISTRY_USER/_PASSWORD or ~/.docker/config.json)"
                )));
            }
            Err(e) => return Err(err(format!("token from {realm}: {e}"))),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(format!("token from {realm}: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| err("no token in the realm's answer"))?;
        self.bearer = Some(token.to_string());
        Ok(())
    }
}

/// `realm="…",service="…",scope="…"` after the scheme.
pub(super) fn challenge_params(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge.split_once(' ').map(|(_, r)| r).unwrap_or("");
    let mut out = Vec::new();
    let mut s = rest;
    while let Some((k, after)) = s.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let (v, next) = match after.strip_prefix('"') {
            Some(q) => match q.split_once('"') {
                Some((v, n)) => (v.to_string(), n),
                None => (q.to_string(), ""),
            },
            None => match after.split_once(',') {
                Some((v, n)) => (v.to_string(), n),
                None => (after.to_string(), ""),
            },
        };
        out.push((k, v));
        s = next;
    }
    out
}

/// The `errors[0].message` of a registry error body, else the body.
pub(super) fn registry_error(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(String::from))
        .unwrap_or_else(|| body.trim().to_string())
}

/// Basic credentials for `host`: the environment, else `~/.docker/config.json`.
pub(super) fn basic_credentials(host: &str) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let (Ok(u), Ok(p)) = (std::env::var("OLLAMAFS_REGISTRY_USER"), std::env::var("OLLAMAFS_REGISTRY_PASSWORD")) {
        return Some(b64.encode(format!("{u}:{p}")));
    }
    let home = std::env::var_os("HOME")?;
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(PathBuf::from(home).join(".docker/config.json")).ok()?).ok()?;
    let auths = cfg.get("auths")?.as_object()?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k.split('/').next() == Some(host)
    })?;
    entry.1.get("auth")?.as_str().map(String::from)
}
