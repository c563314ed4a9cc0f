//! What `ls` and `show` print: Ollama's table and its model details.

use std::io::Write;
use std::time::SystemTime;

use crate::format::human_bytes;
use crate::layout::{self, Source};
use crate::name::Name;
use crate::store::index::Index;
use crate::store::{Store, StoreError, config, listing};

pub(super) fn ls(s: &Store, prefix: Option<&str>) -> Result<(), StoreError> {
    let idx = Index::load(s);
    let (mut rows, warnings) = listing::listable(s, idx.models().cloned());
    for w in warnings {
        eprintln!("warning: {w}");
    }
    for (n, why) in idx.corrupt() {
        eprintln!("warning: skipping {}: {why}", n.display_shortest());
    }
    if let Some(p) = prefix {
        let p = p.to_ascii_lowercase();
        rows.retain(|r| r.model.name.display_shortest().to_ascii_lowercase().starts_with(&p));
    }
    let table: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let m = &r.model;
            [
                m.name.display_shortest(),
                m.id[..12].to_string(),
                human_bytes(m.manifest.total_size()),
                human_time(m.mtime()),
            ]
        })
        .collect();
    print_table(&["NAME", "ID", "SIZE", "MODIFIED"], &table);
    Ok(())
}

pub(super) fn print_table(head: &[&str; 4], rows: &[[String; 4]]) {
    let mut w = [0usize; 4];
    for (i, h) in head.iter().enumerate() {
        w[i] = h.len();
    }
    for r in rows {
        for i in 0..4 {
            w[i] = w[i].max(r[i].len());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: [&str; 4]| {
        format!(
            "{:<a$}    {:<b$}    {:<c$}    {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            a = w[0],
            b = w[1],
            c = w[2]
        )
    };
    let _ = writeln!(out, "{}", line([head[0], head[1], head[2], head[3]]).trim_end());
    for r in rows {
        let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3]]).trim_end());
    }
}

/// Ollama's `format.HumanTime` wording ("2 weeks ago").
pub fn human_time(t: SystemTime) -> String {
    let Ok(d) = SystemTime::now().duration_since(t) else {
        return "Less than a second ago".into();
    };
    let s = d.as_secs();
    let unit = |n: u64, one: &str, many: &str| {
        if n == 1 { format!("1 {one} ago") } else { format!("{n} {many} ago") }
    };
    match s {
        0 => "Less than a second ago".into(),
        1..=59 => unit(s, "second", "seconds"),
        60..=119 => "About a minute ago".into(),
        120..=3599 => unit(s / 60, "minute", "minutes"),
        3600..=7199 => "About an hour ago".into(),
        7200..=86399 => unit(s / 3600, "hour", "hours"),
        86400..=604799 => unit(s / 86400, "day", "days"),
        604800..=2_629_799 => unit(s / 604800, "week", "weeks"),
        2_629_800..=31_557_599 => unit(s / 2_629_800, "month", "months"),
        _ => unit(s / 31_557_600, "year", "years"),
    }
}

#[derive(serde::Serialize)]
struct ShowLayer {
    file: String,
    media_type: String,
    digest: String,
    size: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    from: String,
}

#[derive(serde::Serialize)]
struct ShowOut {
    name: String,
    model: String,
    id: String,
    size: i64,
    modified_at: String,
    details: Option<config::Details>,
    layers: Vec<ShowLayer>,
    license: Option<String>,
    system: Option<String>,
    template: Option<String>,
    parameters: Option<serde_json::Value>,
}

/// `ollamafs show --modelfile`: the Modelfile `/api/show` gives, printed as Ollama prints it.
pub(super) fn show_modelfile(s: Store, raw: &str) -> Result<(), StoreError> {
    let cat = crate::api::StoreCatalog::new(std::sync::Arc::new(s), true);
    let body = serde_json::json!({ "model": raw }).to_string();
    let out = crate::api::models::show(&cat, body.as_bytes()).map_err(|e| match e.status {
        404 => StoreError::NotFound(raw.to_string()),
        _ => StoreError::Invalid(e.message),
    })?;
    print!("{}", out.modelfile);
    Ok(())
}

pub(super) fn show(s: &Store, raw: &str, json: bool) -> Result<(), StoreError> {
    let name: Name = s.resolve(raw)?;
    let (bytes, m) = s.read_manifest(&name)?;
    let meta = std::fs::metadata(s.manifest_path(&name))?;
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let files = layout::files(&m);
    let mut layers = Vec::new();
    let mut licenses = Vec::new();
    let (mut system, mut template, mut parameters) = (None, None, None);
    for f in &files {
        let l = match f.source {
            Source::Layer(i) => &m.layers[i],
            Source::Config => &m.config,
            Source::Manifest => continue,
        };
        layers.push(ShowLayer {
            file: f.name.clone(),
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size,
            from: l.from.clone(),
        });
        let text = || l.digest().and_then(|d| s.read_blob(&d).ok()).map(|b| String::from_utf8_lossy(&b).into_owned());
        match l.media_type.rsplit('.').next().unwrap_or("") {
            "license" => licenses.extend(text()),
            "system" => system = text(),
            "template" | "prompt" => template = text(),
            "params" => parameters = text().and_then(|t| serde_json::from_str(&t).ok()),
            _ => {}
        }
    }
    let details = m.config.digest().and_then(|d| s.read_blob(&d).ok()).and_then(|b| config::details(&b).ok());
    let out = ShowOut {
        name: name.display_shortest(),
        model: name.to_string(),
        id: crate::store::manifest::model_id(&bytes),
        size: m.total_size(),
        modified_at: listing::rfc3339(mtime),
        details,
        layers,
        license: if licenses.is_empty() { None } else { Some(licenses.join("\n")) },
        system,
        template,
        parameters,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| StoreError::Invalid(e.to_string()))?);
        return Ok(());
    }
    println!("  Model");
    println!("    {:<16}{}", "name", out.model);
    println!("    {:<16}{}", "id", out.id);
    if let Some(d) = &out.details {
        println!("    {:<16}{}", "architecture", d.family);
        println!("    {:<16}{}", "parameters", d.parameter_size);
        println!("    {:<16}{}", "quantization", d.quantization_level);
        println!("    {:<16}{}", "format", d.format);
    }
    println!("    {:<16}{}", "size", human_bytes(out.size));
    println!();
    println!("  Layers");
    let w = out.layers.iter().map(|l| l.file.len()).max().unwrap_or(4);
    for l in &out.layers {
        let short = l.media_type.rsplit('.').next().unwrap_or(&l.media_type);
        println!("    {:<w$}  {:<10} {}  {}", l.file, short, l.digest, human_bytes(l.size));
    }
    if let Some(sys) = &out.system {
        println!();
        println!("  System");
        for line in sys.lines() {
            println!("    {line}");
        }
    }
    Ok(())
}
