use std::fs;
use std::sync::Arc;

use super::*;
use crate::api::{StoreCatalog, host_to_addr};
use crate::fixture;
use crate::store::Store;

fn setup() -> (tempfile::TempDir, StoreCatalog, fixture::Info) {
    let dir = tempfile::tempdir().unwrap();
    let info = fixture::build(dir.path(), 8 << 20).unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store.prepare_for_writes().unwrap();
    (dir, StoreCatalog::new(store, false), info)
}

fn manifest_bytes(dir: &tempfile::TempDir, name: &str) -> Vec<u8> {
    fs::read(dir.path().join("manifests").join(Name::parse(name).unwrap().manifest_path())).unwrap()
}

fn blob_count(dir: &tempfile::TempDir) -> usize {
    fs::read_dir(dir.path().join("blobs")).unwrap().count()
}

fn err(status: u16, message: &str) -> ApiError {
    ApiError { status, message: message.into() }
}

#[test]
fn copy_writes_a_byte_identical_manifest_and_no_blob() {
    let (dir, cat, _) = setup();
    let blobs = blob_count(&dir);
    copy(&cat, br#"{"source":"llama3.2","destination":"MyUser/Llama3.2:Custom2"}"#).unwrap();
    // The existing `myuser` folder's spelling is kept; the new parts keep theirs.
    assert_eq!(manifest_bytes(&dir, "myuser/llama3.2:Custom2"), manifest_bytes(&dir, fixture::LLAMA));
    assert!(dir.path().join("manifests/registry.ollama.ai/myuser/llama3.2/Custom2").is_file());
    assert_eq!(blob_count(&dir), blobs);
}

#[test]
fn copy_errors_use_ollamas_words() {
    let (dir, cat, _) = setup();
    let before = manifest_bytes(&dir, fixture::CUSTOM);
    assert_eq!(copy(&cat, b"").unwrap_err(), err(400, "missing request body"));
    assert_eq!(copy(&cat, b"{}").unwrap_err(), err(400, r#"source "" is invalid"#));
    assert_eq!(
        copy(&cat, br#"{"source":"a/b/c/d","destination":"x"}"#).unwrap_err(),
        err(400, r#"source "a/b/c/d" is invalid"#)
    );
    assert_eq!(
        copy(&cat, br#"{"source":"llama3.2","destination":"bad name"}"#).unwrap_err(),
        err(400, r#"destination "bad name" is invalid"#)
    );
    assert_eq!(copy(&cat, br#"{"source":"nope","destination":"x"}"#).unwrap_err(), err(404, "model 'nope' not found"));
    let e = copy(&cat, b"{not json").unwrap_err();
    assert_eq!(e.status, 400);
    assert!(copy(&cat, br#"{"source": 5}"#).unwrap_err().message.contains("invalid type"));
    // Nothing changed and a missing source left no folder behind.
    assert_eq!(manifest_bytes(&dir, fixture::CUSTOM), before);
    assert!(!dir.path().join("manifests/registry.ollama.ai/library/x").exists());
}

#[test]
fn copy_onto_itself_is_a_no_op_even_when_missing() {
    let (dir, cat, _) = setup();
    let stat = fs::metadata(dir.path().join("manifests/registry.ollama.ai/library/llama3.2/latest")).unwrap();
    copy(&cat, br#"{"source":"llama3.2","destination":"LLAMA3.2:latest"}"#).unwrap();
    copy(&cat, br#"{"source":"ghost","destination":"ghost"}"#).unwrap();
    let after = fs::metadata(dir.path().join("manifests/registry.ollama.ai/library/llama3.2/latest")).unwrap();
    assert_eq!(stat.modified().unwrap(), after.modified().unwrap());
}

#[test]
fn copy_over_an_existing_model_replaces_it_and_prunes_what_only_it_used() {
    let (dir, cat, info) = setup();
    let system_blob = dir.path().join("blobs").join(info.system_custom.blob_file_name());
    assert!(system_blob.exists());
    copy(&cat, br#"{"source":"llama3.2:latest","destination":"myuser/llama3.2:custom"}"#).unwrap();
    assert_eq!(manifest_bytes(&dir, fixture::CUSTOM), manifest_bytes(&dir, fixture::LLAMA));
    assert!(!system_blob.exists(), "the custom system prompt is used by no model any more");
    assert!(dir.path().join("blobs").join(info.big_model.blob_file_name()).exists());
}

#[test]
fn delete_prunes_unused_blobs_and_keeps_shared_ones() {
    let (dir, cat, info) = setup();
    let blobs = blob_count(&dir);
    delete(&cat, br#"{"model":"myuser/llama3.2:custom"}"#).unwrap();
    assert!(!dir.path().join("manifests/registry.ollama.ai/myuser").exists(), "empty folders go too");
    assert_eq!(blob_count(&dir), blobs - 1, "only the system prompt was unique to it");
    assert!(dir.path().join("blobs").join(info.big_model.blob_file_name()).exists());
    // The deprecated field, a :local suffix and the spelling of another case all work.
    delete(&cat, br#"{"name":"LLAMA3.2:local"}"#).unwrap();
    assert!(!dir.path().join("blobs").join(info.big_model.blob_file_name()).exists());
}

#[test]
fn delete_errors_use_ollamas_words() {
    let (dir, cat, _) = setup();
    let blobs = blob_count(&dir);
    assert_eq!(delete(&cat, b"").unwrap_err(), err(400, "missing request body"));
    assert_eq!(delete(&cat, b"{}").unwrap_err(), err(400, "model is required"));
    assert_eq!(delete(&cat, br#"{"model":"x:local:cloud"}"#).unwrap_err().status, 400);
    assert_eq!(delete(&cat, br#"{"model":"a b"}"#).unwrap_err(), err(400, r#"name "a b" is invalid"#));
    assert_eq!(delete(&cat, br#"{"model":"Nope"}"#).unwrap_err(), err(404, "model 'Nope' not found"));
    assert_eq!(blob_count(&dir), blobs);
}

#[test]
fn tags_lists_like_ollama() {
    let (dir, cat, _) = setup();
    // A model whose config blob is gone is left out; one whose weights are gone is not.
    let hf = manifest_bytes(&dir, fixture::HF);
    let m = Manifest::parse(&hf).unwrap();
    fs::remove_file(dir.path().join("blobs").join(m.config.digest().unwrap().blob_file_name())).unwrap();
    let list = tags(&cat);
    let names: Vec<&str> = list.models.iter().map(|m| m.name.as_str()).collect();
    assert!(!names.contains(&fixture::HF), "{names:?}");
    assert!(names.contains(&fixture::PORT) && names.contains(&fixture::LLAMA) && names.contains(&fixture::MLX));
    let llama = list.models.iter().find(|m| m.name == fixture::LLAMA).unwrap();
    let bytes = manifest_bytes(&dir, fixture::LLAMA);
    assert_eq!(llama.model, llama.name);
    assert_eq!(llama.digest, crate::store::manifest::model_id(&bytes));
    assert_eq!(llama.size, Manifest::parse(&bytes).unwrap().total_size());
    assert_eq!(llama.details.family, "llama");
    assert_eq!(llama.details.format, "gguf");
    assert_eq!(llama.details.quantization_level, "Q4_K_M");
    let custom = list.models.iter().find(|m| m.name == fixture::CUSTOM).unwrap();
    assert_eq!(custom.details.parent_model, fixture::LLAMA);
    chrono::DateTime::parse_from_rfc3339(&llama.modified_at).unwrap();
    // Newest first, by whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    copy(&cat, br#"{"source":"qwen2.5:0.5b","destination":"zz:new"}"#).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    copy(&cat, br#"{"source":"qwen2.5:0.5b","destination":"aa:newer"}"#).unwrap();
    let list = tags(&cat);
    assert_eq!(list.models[0].name, "aa:newer");
    assert_eq!(list.models[1].name, "zz:new");
}

#[test]
fn show_has_ollamas_fields() {
    let (dir, cat, info) = setup();
    let s = show(&cat, br#"{"model":"myuser/llama3.2:custom"}"#).unwrap();
    assert_eq!(s.license, format!("{}\n{}", fixture::LICENSE_1, fixture::LICENSE_2));
    assert_eq!(s.system, fixture::SYSTEM_CUSTOM);
    assert_eq!(s.template, fixture::TEMPLATE);
    let lines: Vec<&str> = s.parameters.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], format!("{:<30} {}", "stop", "\"<|start_header_id|>\""));
    assert_eq!(s.details.family, "llama");
    assert_eq!(s.details.parent_model, fixture::LLAMA);
    assert_eq!(s.model_info.get("general.architecture"), Some(&Value::from("llama")));
    assert_eq!(s.model_info.get("general.file_type"), Some(&Value::from(15)));
    assert!(!s.model_info.contains_key("general.name"));
    assert_eq!(s.capabilities, vec!["completion"]);
    let blob = dir.path().canonicalize().unwrap().join("blobs").join(info.big_model.blob_file_name());
    assert!(s.modelfile.starts_with("# Modelfile generated by \"ollama show\"\n"), "{}", s.modelfile);
    assert!(s.modelfile.contains("# FROM myuser/llama3.2:custom\n\n"));
    assert!(s.modelfile.contains(&format!("FROM {}\n", blob.display())), "{}", s.modelfile);
    assert!(s.modelfile.contains("PARAMETER stop \"<|eot_id|>\"\n"));
    assert!(s.modelfile.contains(&format!("SYSTEM \"\"\"{}\"\"\"", fixture::SYSTEM_CUSTOM)));
    assert!(s.modelfile.contains(&format!("LICENSE \"\"\"{}\"\"\"", fixture::LICENSE_2)));
    chrono::DateTime::parse_from_rfc3339(&s.modified_at).unwrap();

    // A model with a projector and messages, no template.
    let q = show(&cat, br#"{"name":"qwen2.5:0.5b"}"#).unwrap();
    assert_eq!(q.template, DEFAULT_TEMPLATE);
    assert!(q.capabilities.contains(&"vision".to_string()));
    assert_eq!(q.license, fixture::APACHE);
    assert!(q.modelfile.contains("MESSAGE user \"Hi & welcome\"\n"), "{}", q.modelfile);
    assert!(q.messages.is_some());
    // Adapters are listed.
    let p = show(&cat, br#"{"model":"localhost:5000/team/tiny:v1"}"#).unwrap();
    assert_eq!(p.modelfile.matches("\nADAPTER ").count(), 2);
}

#[test]
fn show_errors() {
    let (dir, cat, info) = setup();
    assert_eq!(show(&cat, b"").unwrap_err(), err(400, "missing request body"));
    assert_eq!(show(&cat, b"{}").unwrap_err(), err(400, "model is required"));
    assert_eq!(show(&cat, br#"{"model":"a b"}"#).unwrap_err(), err(400, "invalid model name"));
    assert_eq!(show(&cat, br#"{"model":"nope"}"#).unwrap_err(), err(404, "model 'nope:latest' not found"));
    // A missing text blob is a 404, as in Ollama.
    fs::remove_file(dir.path().join("blobs").join(info.system_custom.blob_file_name())).unwrap();
    assert_eq!(
        show(&cat, br#"{"model":"myuser/llama3.2:custom"}"#).unwrap_err(),
        err(404, "model 'myuser/llama3.2:custom' not found")
    );
}

#[test]
fn blob_upload_checks_the_digest_and_leaves_nothing_on_mismatch() {
    let (dir, cat, info) = setup();
    let blobs = blob_count(&dir);
    let data = b"a new layer".to_vec();
    let d = Digest::of_bytes(&data);
    assert_eq!(head_blob(&cat, &d.prefixed()).unwrap_err().status, 404);
    let wrong = Digest::of_bytes(b"something else");
    let e = upload_blob(&cat, &wrong, &data[..]).unwrap_err();
    assert_eq!(e, err(400, &format!("digest mismatch, expected {:?}, got {:?}", wrong.prefixed(), d.prefixed())));
    assert_eq!(blob_count(&dir), blobs);
    assert_eq!(fs::read_dir(cat.store().process_scratch()).unwrap().count(), 0, "no temp file left");
    assert_eq!(upload_blob(&cat, &d, &data[..]).unwrap(), 201);
    assert_eq!(fs::read(dir.path().join("blobs").join(d.blob_file_name())).unwrap(), data);
    head_blob(&cat, &d.prefixed()).unwrap();
    head_blob(&cat, &format!("sha256-{}", info.template.hex())).unwrap();
    assert_eq!(head_blob(&cat, "sha256:xyz").unwrap_err(), err(400, "invalid digest format"));
    assert_eq!(blob_digest(&d.prefixed().to_uppercase()).unwrap_err().status, 400);
}

#[test]
fn go_values_print_like_percent_sharp_v() {
    assert_eq!(go_value(&serde_json::json!("a\"b")), r#""a\"b""#);
    assert_eq!(go_value(&serde_json::json!(1.0)), "1");
    assert_eq!(go_value(&serde_json::json!(0.7)), "0.7");
    assert_eq!(go_value(&serde_json::json!(42)), "42");
    assert_eq!(go_value(&serde_json::json!(true)), "true");
}

#[test]
fn listen_address_follows_ollama_host() {
    assert_eq!(host_to_addr(""), "127.0.0.1:11434");
    assert_eq!(host_to_addr("0.0.0.0"), "0.0.0.0:11434");
    assert_eq!(host_to_addr("0.0.0.0:8080"), "0.0.0.0:8080");
    assert_eq!(host_to_addr(":8080"), "0.0.0.0:8080");
    assert_eq!(host_to_addr("http://example.com"), "example.com:80");
    assert_eq!(host_to_addr("https://example.com/path"), "example.com:443");
    assert_eq!(host_to_addr("http://1.2.3.4:5678"), "1.2.3.4:5678");
    assert_eq!(host_to_addr("[::1]:9999"), "[::1]:9999");
    assert_eq!(host_to_addr("::1"), "[::1]:11434");
    assert_eq!(host_to_addr("\"127.0.0.1:7\""), "127.0.0.1:7");
    assert_eq!(host_to_addr("localhost:notaport"), "localhost:11434");
}

#[test]
fn only_a_pure_unload_request_is_answered() {
    assert_eq!(unload_request(br#"{"model":"x:1","keep_alive":0}"#).as_deref(), Some("x:1"));
    assert_eq!(unload_request(br#"{"model":"x","keep_alive":"0s","messages":[]}"#).as_deref(), Some("x"));
    assert_eq!(unload_request(br#"{"model":"x","keep_alive":0,"prompt":"hi"}"#), None);
    assert_eq!(unload_request(br#"{"model":"x"}"#), None);
    assert_eq!(unload_request(br#"{"model":"x","keep_alive":"5m"}"#), None);
    assert_eq!(unload_request(b"junk"), None);
}
