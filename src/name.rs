//! Ollama model names: the grammar of `types/model/name.go`, the manifest path and
//! the short display form that `ollama list` prints.

use std::fmt;

pub const DEFAULT_HOST: &str = "registry.ollama.ai";
pub const DEFAULT_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";
/// What Ollama's parser puts where a separator has nothing on one side.
const MISSING: &str = "!MISSING!";

/// Which of the four name parts a string is checked as; each has its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

/// Ollama's per-part grammar (`types/model/name.go`). ASCII only, lengths in bytes.
pub fn is_valid_part(part: Part, s: &str) -> bool {
    let max = match part {
        Part::Host => 350,
        _ => 80,
    };
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() > max {
        return false;
    }
    let first_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if !first_ok(bytes[0]) {
        return false;
    }
    bytes[1..].iter().all(|&c| {
        first_ok(c)
            || c == b'-'
            || match part {
                Part::Host => c == b'.' || c == b':',
                Part::Namespace => false,
                Part::Model | Part::Tag => c == b'.',
            }
    })
}

/// A fully qualified model name. Parts keep the case they were given.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

/// The bare parse, before defaults: empty parts stay empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BareName {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

impl BareName {
    /// Ollama's `IsValid`/`IsFullyQualified`: every part present and valid.
    pub fn is_valid(&self) -> bool {
        is_valid_part(Part::Host, &self.host)
            && is_valid_part(Part::Namespace, &self.namespace)
            && is_valid_part(Part::Model, &self.model)
            && is_valid_part(Part::Tag, &self.tag)
    }

    fn with_defaults(mut self) -> BareName {
        if self.host.is_empty() {
            self.host = DEFAULT_HOST.into();
        }
        if self.namespace.is_empty() {
            self.namespace = DEFAULT_NAMESPACE.into();
        }
        if self.tag.is_empty() {
            self.tag = DEFAULT_TAG.into();
        }
        self
    }
}

/// Split `s` at the last `sep`; an empty side becomes `!MISSING!` as in Ollama.
fn cut_last(s: &str, sep: char) -> Option<(String, String)> {
    let i = s.rfind(sep)?;
    let fix = |p: &str| {
        if p.is_empty() { MISSING.to_string() } else { p.to_string() }
    };
    Some((fix(&s[..i]), fix(&s[i + sep.len_utf8()..])))
}

/// `ParseNameBare`: no defaults, no validation.
pub fn parse_bare(s: &str) -> BareName {
    let mut n = BareName::default();
    let mut rest = s.to_string();
    // The tag is after the last ':' only when that colon comes after the last '/'.
    if let Some(colon) = rest.rfind(':')
        && rest.rfind('/').is_none_or(|slash| colon > slash)
        && let Some((before, tag)) = cut_last(&rest, ':')
    {
        n.tag = tag;
        rest = before;
    }
    match cut_last(&rest, '/') {
        None => {
            n.model = rest;
            return n;
        }
        Some((before, model)) => {
            n.model = model;
            rest = before;
        }
    }
    match cut_last(&rest, '/') {
        None => n.namespace = rest,
        Some((host, ns)) => {
            n.namespace = ns;
            n.host = match host.find("://") {
                Some(i) => host[i + 3..].to_string(),
                None => host,
            };
        }
    }
    n
}

/// Why a string is not a usable model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName(pub String);

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid model name {:?}", self.0)
    }
}
impl std::error::Error for InvalidName {}

impl Name {
    /// `ParseName`: bare parse, empty parts filled with the defaults, then validated.
    pub fn parse(s: &str) -> Result<Name, InvalidName> {
        let b = parse_bare(s).with_defaults();
        if !b.is_valid() {
            return Err(InvalidName(s.to_string()));
        }
        Ok(Name { host: b.host, namespace: b.namespace, model: b.model, tag: b.tag })
    }

    /// Build from four parts, each checked against the grammar.
    pub fn from_parts(host: &str, namespace: &str, model: &str, tag: &str) -> Result<Name, InvalidName> {
        let b = BareName { host: host.into(), namespace: namespace.into(), model: model.into(), tag: tag.into() };
        if !b.is_valid() {
            return Err(InvalidName(format!("{host}/{namespace}/{model}:{tag}")));
        }
        Ok(Name { host: b.host, namespace: b.namespace, model: b.model, tag: b.tag })
    }

    /// `ParseNameFromFilepath`: exactly four valid `/`-separated parts.
    pub fn from_manifest_path(rel: &str) -> Option<Name> {
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() != 4 {
            return None;
        }
        Name::from_parts(parts[0], parts[1], parts[2], parts[3]).ok()
    }

    /// Relative path below `manifests/`.
    pub fn manifest_path(&self) -> String {
        format!("{}/{}/{}/{}", self.host, self.namespace, self.model, self.tag)
    }

    pub fn is_default_host(&self) -> bool {
        self.host.eq_ignore_ascii_case(DEFAULT_HOST)
    }

    pub fn is_default_namespace(&self) -> bool {
        self.namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE)
    }

    /// Ollama's `DisplayShortest`: defaults left out (compared ignoring case), tag always shown.
    pub fn display_shortest(&self) -> String {
        if !self.is_default_host() {
            format!("{}/{}/{}", self.host, self.namespace, self.entry())
        } else if !self.is_default_namespace() {
            format!("{}/{}", self.namespace, self.entry())
        } else {
            self.entry()
        }
    }

    /// A model folder in the mount whose name is not a valid model name (`New Folder`,
    /// `llama3.2:latest (copy)`): it can hold files as a draft but is never published.
    /// Its whole folder name is kept in `model`, and `tag` is empty.
    pub fn draft(host: &str, namespace: &str, entry: &str) -> Name {
        Name { host: host.into(), namespace: namespace.into(), model: entry.into(), tag: String::new() }
    }

    /// Only a draft: a folder name that can never be published (see `Name::draft`).
    pub fn is_draft_only(&self) -> bool {
        self.tag.is_empty()
    }

    /// The folder entry of this model in its prefix folder: `model:tag`, or a draft's name.
    pub fn entry(&self) -> String {
        if self.tag.is_empty() { self.model.clone() } else { format!("{}:{}", self.model, self.tag) }
    }

    /// True when both names are the same ignoring ASCII case.
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        self.host.eq_ignore_ascii_case(&other.host)
            && self.namespace.eq_ignore_ascii_case(&other.namespace)
            && self.model.eq_ignore_ascii_case(&other.model)
            && self.tag.eq_ignore_ascii_case(&other.tag)
    }

    /// A key that equal-ignoring-case names share.
    pub fn folded(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl fmt::Display for Name {
    /// `host/namespace/model:tag`, as Ollama's `String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.host, self.namespace, self.entry())
    }
}

/// Ollama's model references (`internal/modelref`, used by delete and show): a trailing
/// `:local` is dropped, a trailing `:cloud` names the cloud tag (`x:20b:cloud` is
/// `x:20b-cloud`). Returns the name to parse, or the error text Ollama gives.
pub fn strip_source_suffix(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("model is required".into());
    }
    let (mut rest, mut local, mut cloud) = (trimmed, false, false);
    loop {
        let lower = rest.to_ascii_lowercase();
        if lower.ends_with(":local") && rest.len() > 6 {
            local = true;
            rest = &rest[..rest.len() - 6];
        } else if lower.ends_with(":cloud") && rest.len() > 6 && !cloud {
            cloud = true;
            rest = &rest[..rest.len() - 6];
        } else {
            break;
        }
        if local && cloud {
            return Err(format!("use either :local or :cloud, not both: {raw:?}"));
        }
    }
    if !cloud {
        return Ok(rest.to_string());
    }
    // The tag, if any, is what follows the last ':' after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    Ok(match rest[slash..].rfind(':') {
        Some(_) => format!("{rest}-cloud"),
        None => format!("{rest}:cloud"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (String, String, String, String) {
        let b = parse_bare(s).with_defaults();
        (b.host, b.namespace, b.model, b.tag)
    }

    /// The test vectors of Ollama's `name_test.go`: bare validity, validity with defaults, parts, display.
    #[test]
    fn store_doc_vectors() {
        let p80 = "8".repeat(80);
        let h350 = "3".repeat(350);
        let v80 = format!("{p80}/{p80}/{p80}:{p80}");
        let v350 = format!("{h350}/{p80}/{p80}:{p80}");
        #[rustfmt::skip]
        let cases: Vec<(&str, bool, bool, [&str; 4], &str)> = vec![
            ("", false, false, ["registry.ollama.ai", "library", "", "latest"], ""),
            ("_why/_the/_lucky:_stiff", true, true, ["_why", "_the", "_lucky", "_stiff"], "_why/_the/_lucky:_stiff"),
            ("h/n/m:t", true, true, ["h", "n", "m", "t"], "h/n/m:t"),
            ("host/namespace/model:tag", true, true, ["host", "namespace", "model", "tag"], "host/namespace/model:tag"),
            ("host/namespace/model", false, true, ["host", "namespace", "model", "latest"], "host/namespace/model:latest"),
            ("namespace/model", false, true, ["registry.ollama.ai", "namespace", "model", "latest"], "namespace/model:latest"),
            ("model", false, true, ["registry.ollama.ai", "library", "model", "latest"], "model:latest"),
            (&v80, true, true, [&p80, &p80, &p80, &p80], &v80),
            (&v350, true, true, [&h350, &p80, &p80, &p80], &v350),
            ("h/nn/mm:t", true, true, ["h", "nn", "mm", "t"], "h/nn/mm:t"),
            ("m", false, true, ["registry.ollama.ai", "library", "m", "latest"], "m:latest"),
            ("n/m:", false, false, ["registry.ollama.ai", "n", "m", "!MISSING!"], ""),
            ("h/n/m", false, true, ["h", "n", "m", "latest"], "h/n/m:latest"),
            ("@t", false, false, ["registry.ollama.ai", "library", "@t", "latest"], ""),
            ("m@d", false, false, ["registry.ollama.ai", "library", "m@d", "latest"], ""),
            ("^", false, false, ["registry.ollama.ai", "library", "^", "latest"], ""),
            ("mm:", false, false, ["registry.ollama.ai", "library", "mm", "!MISSING!"], ""),
            ("/nn/mm", false, false, ["!MISSING!", "nn", "mm", "latest"], ""),
            ("//", false, false, ["!MISSING!", "!MISSING!", "!MISSING!", "latest"], ""),
            ("//mm", false, false, ["!MISSING!", "!MISSING!", "mm", "latest"], ""),
            ("hh//", false, false, ["hh", "!MISSING!", "!MISSING!", "latest"], ""),
            ("//mm:@", false, false, ["!MISSING!", "!MISSING!", "mm", "@"], ""),
            ("00@", false, false, ["registry.ollama.ai", "library", "00@", "latest"], ""),
            ("@", false, false, ["registry.ollama.ai", "library", "@", "latest"], ""),
            ("-hh/nn/mm:tt", false, false, ["-hh", "nn", "mm", "tt"], ""),
            ("hh/-nn/mm:tt", false, false, ["hh", "-nn", "mm", "tt"], ""),
            ("hh/nn/-mm:tt", false, false, ["hh", "nn", "-mm", "tt"], ""),
            ("hh/nn/mm:-tt", false, false, ["hh", "nn", "mm", "-tt"], ""),
            ("host:https/namespace/model:tag", true, true, ["host:https", "namespace", "model", "tag"], "host:https/namespace/model:tag"),
            ("host/name:space/model:tag", false, false, ["host", "name:space", "model", "tag"], ""),
        ];
        for (input, bare_valid, valid, parts, display) in cases {
            assert_eq!(parse_bare(input).is_valid(), bare_valid, "bare validity of {input:?}");
            assert_eq!(Name::parse(input).is_ok(), valid, "validity of {input:?}");
            let got = p(input);
            assert_eq!([got.0.as_str(), got.1.as_str(), got.2.as_str(), got.3.as_str()], parts, "parts of {input:?}");
            if valid {
                assert_eq!(Name::parse(input).unwrap().display_shortest(), display);
            }
        }
    }

    #[test]
    fn part_vectors() {
        assert!(!is_valid_part(Part::Host, ""));
        for ok in ["a", "a.", "a.b", "a:123"] {
            assert!(is_valid_part(Part::Host, ok), "{ok}");
        }
        assert!(!is_valid_part(Part::Host, "a:123/aa/bb"));
        assert!(is_valid_part(Part::Namespace, "bb"));
        assert!(!is_valid_part(Part::Namespace, "a."));
        assert!(!is_valid_part(Part::Model, "-h"));
        assert!(!is_valid_part(Part::Model, ".."));
        assert!(!is_valid_part(Part::Model, "."));
        assert!(!is_valid_part(Part::Tag, "a b"));
        assert!(!is_valid_part(Part::Model, "modèle"));
        assert!(is_valid_part(Part::Model, &"m".repeat(80)));
        assert!(!is_valid_part(Part::Model, &"m".repeat(81)));
        assert!(is_valid_part(Part::Host, &"h".repeat(350)));
        assert!(!is_valid_part(Part::Host, &"h".repeat(351)));
    }

    #[test]
    fn namespace_vectors() {
        let ns_ok = |s: &str| is_valid_part(Part::Namespace, s);
        assert!(!ns_ok(""));
        assert!(ns_ok("a"));
        for bad in ["a:b", "a/b", "a:b/c", "a/b:c", "a/b:c/d", "a/b:c/d@e", "a/b:c/d@sha256-100"] {
            assert!(!ns_ok(bad), "{bad}");
        }
        assert!(ns_ok("himynameisjoe"));
        assert!(ns_ok("himynameisreallyreallyreallyreallyreallyreallyreallylongbutvalid"));
    }

    #[test]
    fn manifest_paths() {
        let n = Name::parse("llama3.2").unwrap();
        assert_eq!(n.manifest_path(), "registry.ollama.ai/library/llama3.2/latest");
        assert_eq!(Name::from_manifest_path("host/namespace/model/tag").unwrap().model, "model");
        assert_eq!(Name::from_manifest_path("host:5000/ns/m/t").unwrap().host, "host:5000");
        for bad in [
            "namespace/model/tag",
            "model/tag",
            "model",
            "../../model/tag",
            "/namespace/./tag",
            "./././.",
            "/path/to/random/file",
            "h/n.x/m/t",
            "h/n/m/.DS_Store",
        ] {
            assert!(Name::from_manifest_path(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn display_ignores_case_of_defaults_and_keeps_case_of_the_rest() {
        let n = Name::from_parts("Registry.Ollama.AI", "Library", "Llama3.2", "Q4").unwrap();
        assert_eq!(n.display_shortest(), "Llama3.2:Q4");
        let n = Name::from_parts("registry.ollama.ai", "MyUser", "m", "latest").unwrap();
        assert_eq!(n.display_shortest(), "MyUser/m:latest");
        let n = Name::parse("localhost:5000/team/tiny:v1").unwrap();
        assert_eq!(n.display_shortest(), "localhost:5000/team/tiny:v1");
        assert_eq!(n.to_string(), "localhost:5000/team/tiny:v1");
    }

    #[test]
    fn scheme_is_dropped_and_extra_slashes_are_invalid() {
        let n = Name::parse("https://example.com/ns/m:t").unwrap();
        assert_eq!(n.host, "example.com");
        assert!(Name::parse("https://a/b/ns/m:t").is_err());
        assert!(Name::parse(" llama3.2").is_err(), "whitespace is not trimmed");
    }

    #[test]
    fn case_folding() {
        let a = Name::parse("MyUser/Llama:Custom").unwrap();
        let b = Name::parse("myuser/llama:custom").unwrap();
        assert!(a.eq_ignore_case(&b));
        assert_ne!(a, b);
        assert_eq!(a.folded(), b.folded());
    }

    #[test]
    fn source_suffixes_like_modelref() {
        assert_eq!(strip_source_suffix(" llama3.2:local ").as_deref(), Ok("llama3.2"));
        assert_eq!(strip_source_suffix("x:LOCAL").as_deref(), Ok("x"));
        assert_eq!(strip_source_suffix("x:cloud").as_deref(), Ok("x:cloud"));
        assert_eq!(strip_source_suffix("x:20b:cloud").as_deref(), Ok("x:20b-cloud"));
        assert_eq!(strip_source_suffix("h:1234/n/x:cloud").as_deref(), Ok("h:1234/n/x:cloud"));
        assert_eq!(strip_source_suffix("x:20b").as_deref(), Ok("x:20b"));
        assert_eq!(strip_source_suffix("  ").unwrap_err(), "model is required");
        assert_eq!(
            strip_source_suffix("x:local:cloud").unwrap_err(),
            r#"use either :local or :cloud, not both: "x:local:cloud""#
        );
        assert_eq!(
            strip_source_suffix("x:cloud:local").unwrap_err(),
            r#"use either :local or :cloud, not both: "x:cloud:local""#
        );
    }
}
