//! A GGUF that carries a chat template gets a prompt template and stop words when it
//! becomes a model (`create -f`, `import`), as `ollama create` gives it one. The stored
//! template is rendered by Go's own `text/template` (the engine Ollama uses) with a
//! conversation shaped as Ollama passes it, and must give the format's prompt exactly.

mod common;
use common::*;
use std::fs;
use std::path::Path;

/// (Jinja marker text in the GGUF, detected name, stop words, the prompt Go must render).
const FORMATS: &[(&str, &str, &[&str], &str)] = &[
    (
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}",
        "chatml",
        &["<|im_start|>", "<|im_end|>"],
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}",
        "llama3-instruct",
        &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    (
        "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}",
        "gemma-instruct",
        &["<end_of_turn>"],
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        "{{'<|' + m['role'] + '|>' + '\\n' + m['content'] + '<|end|>\\n'}}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{# <|user|> #}",
        "phi-3",
        &["<|end|>", "<|user|>", "<|assistant|>"],
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n",
    ),
    (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% endfor %}",
        "mistral-instruct",
        &["[INST]", "[/INST]"],
        "[INST] Be brief.\n\nHi[/INST] Hello</s>[INST] Bye[/INST]",
    ),
];

/// Renders a template file with Go's text/template and a conversation as Ollama passes one.
const RENDER_GO: &str = r#"package main

import (
	"os"
	"text/template"
)

type Message struct{ Role, Content string }

func main() {
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	t := template.Must(template.New("t").Parse(string(text)))
	data := map[string]any{
		"System": "Be brief.",
		"Messages": []Message{{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}},
	}
	if err := t.Execute(os.Stdout, data); err != nil {
		panic(err)
	}
}
"#;

fn go() -> Option<&'static str> {
    if std::process::Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()) {
        return Some("go");
    }
    assert!(std::env::var("CI").is_err(), "CI=true but no Go toolchain (.ci/run installs golang-go)");
    skip("CHAT TEMPLATE TEST: install golang-go to render templates with Go's text/template");
    None
}

#[test]
fn a_gguf_with_a_chat_template_gets_a_template_go_renders_as_the_format_wants() {
    let Some(go) = go() else { return };
    let (dir, store, _) = fixture_store(4 << 20);
    let render = dir.path().join("render.go");
    fs::write(&render, RENDER_GO).unwrap();
    for (i, (jinja, name, stop, want)) in FORMATS.iter().enumerate() {
        let gguf = dir.path().join(format!("chat{i}.gguf"));
        ollamafs::fixture::write_chat_gguf_file(&gguf, "llama", 15, 4 << 20, Some(jinja)).unwrap();
        let modelfile = dir.path().join(format!("Modelfile{i}"));
        fs::write(&modelfile, format!("FROM {}\n", gguf.display())).unwrap();
        let model = format!("chat{i}:v1");
        let o = ollamafs(&store, &["create", &model, "-f", &modelfile.to_string_lossy()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(&format!("using autodetected template {name}")), "{}", stdout(&o));
        let manifest: serde_json::Value =
            serde_json::from_str(&manifest_bytes(&store, &format!("registry.ollama.ai/library/chat{i}/v1"))).unwrap();
        let layer = |kind: &str| {
            let l = manifest["layers"].as_array().unwrap().iter().find(|l| l["mediaType"] == kind).cloned();
            let d = l.unwrap_or_else(|| panic!("{name}: no {kind} layer: {manifest}"))["digest"]
                .as_str()
                .unwrap()
                .replace(':', "-");
            store.join("blobs").join(d)
        };
        let params: serde_json::Value =
            serde_json::from_slice(&fs::read(layer("application/vnd.ollama.image.params")).unwrap()).unwrap();
        assert_eq!(params["stop"], serde_json::json!(stop), "{name}");
        let template = layer("application/vnd.ollama.image.template");
        let out = std::process::Command::new(go)
            .args(["run", &render.to_string_lossy(), &template.to_string_lossy()])
            .env("GOCACHE", dir.path().join("gocache"))
            .env("GOPATH", dir.path().join("gopath"))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: Go could not render it: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), *want, "{name}");
    }
    // A template given in the Modelfile wins; a file without a chat template gets none.
    let gguf = dir.path().join("chat0.gguf");
    let modelfile = dir.path().join("ModelfileOwn");
    fs::write(&modelfile, format!("FROM {}\nTEMPLATE \"{{{{ .Prompt }}}}\"\n", gguf.display())).unwrap();
    let o = ollamafs(&store, &["create", "own:v1", "-f", &modelfile.to_string_lossy()]);
    assert!(o.status.success() && !stdout(&o).contains("autodetected"), "{}", stdout(&o));
    let plain = dir.path().join("plain.gguf");
    ollamafs::fixture::write_gguf_file(&plain, "llama", 15, 4 << 20).unwrap();
    let o = ollamafs(&store, &["import", "--name", "plain:v1", &plain.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest_bytes(&store, "registry.ollama.ai/library/plain/v1");
    assert!(!m.contains("image.template") && !m.contains("image.params"), "{m}");
    assert_verifies(Path::new(&store));
}
