//! A prompt template for a GGUF that carries a chat template (`tokenizer.chat_template`,
//! Jinja), written in Ollama's Go template language, and the stop words that go with it:
//! what `ollama create` adds when it recognises the file's chat format.
//!
//! The format is recognised by the turn markers it uses. The templates are this project's
//! own wording of each format (Ollama's are not copied), so a model made here from such a
//! file chats correctly in Ollama, but its template layer's bytes, and so its ID, may
//! differ from the one `ollama create` makes.

/// A recognised chat format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub name: &'static str,
    pub template: &'static str,
    pub stop: &'static [&'static str],
}

const CHATML: &str = "{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
";

const LLAMA3: &str = "{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

";

// Gemma has no system turn: the system prompt opens the first user turn.
const GEMMA: &str = "{{- range $i, $m := .Messages }}
{{- if eq $m.Role \"user\" }}<start_of_turn>user
{{ if and $.System (eq $i 0) }}{{ $.System }}

{{ end }}{{ $m.Content }}<end_of_turn>
{{ else if eq $m.Role \"assistant\" }}<start_of_turn>model
{{ $m.Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
";

const PHI3: &str = "{{- if .System }}<|system|>
{{ .System }}<|end|>
{{ end }}
{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
";

// Mistral's instruction format: the system prompt opens the first instruction.
const MISTRAL: &str = "{{- range $i, $m := .Messages }}
{{- if eq $m.Role \"user\" }}[INST] {{ if and $.System (eq $i 0) }}{{ $.System }}

{{ end }}{{ $m.Content }}[/INST]
{{- else if eq $m.Role \"assistant\" }} {{ $m.Content }}</s>
{{- end }}
{{- end }}";

/// The chat format of a Jinja chat template, when it is one of those above.
pub fn detect(jinja: &str) -> Option<Detected> {
    let has = |s: &str| jinja.contains(s);
    let (name, template, stop): (&str, &str, &[&str]) = if has("<|start_header_id|>") {
        ("llama3-instruct", LLAMA3, &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    } else if has("<|im_start|>") {
        ("chatml", CHATML, &["<|im_start|>", "<|im_end|>"])
    } else if has("<start_of_turn>") {
        ("gemma-instruct", GEMMA, &["<end_of_turn>"])
    } else if has("<|user|>") && has("<|end|>") {
        ("phi-3", PHI3, &["<|end|>", "<|user|>", "<|assistant|>"])
    } else if has("[INST]") {
        ("mistral-instruct", MISTRAL, &["[INST]", "[/INST]"])
    } else {
        return None;
    };
    Some(Detected { name, template, stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart_by_their_turn_markers() {
        let qwen = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        assert_eq!(detect(qwen).unwrap().name, "chatml");
        let llama = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}";
        assert_eq!(detect(llama).unwrap().stop, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]);
        assert_eq!(detect("{{ '<start_of_turn>' + role + '\\n' }}").unwrap().name, "gemma-instruct");
        assert_eq!(detect("{{'<|user|>' + '\\n' + message['content'] + '<|end|>'}}").unwrap().name, "phi-3");
        assert_eq!(detect("{{ '[INST] ' + message['content'] + ' [/INST]' }}").unwrap().name, "mistral-instruct");
        assert_eq!(detect("{{ message['content'] }}"), None);
    }

    #[test]
    fn every_template_uses_ollamas_variables_and_balances_its_actions() {
        for t in [CHATML, LLAMA3, GEMMA, PHI3, MISTRAL] {
            assert!(t.contains(".Messages") && t.contains(".System") && t.contains(".Content"), "{t}");
            let opens = t.matches("{{- if").count() + t.matches("{{ if").count() + t.matches("{{- range").count();
            assert_eq!(opens, t.matches("end }}").count(), "unbalanced: {t}");
        }
    }
}
