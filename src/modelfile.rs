//! Ollama's Modelfile: `FROM`, `SYSTEM`, `TEMPLATE`, `PARAMETER`, `LICENSE`, `MESSAGE`,
//! `ADAPTER`; arguments to the end of the line, `"quoted"` or `"""triple-quoted"""` (which
//! may span lines); `#` comments. Errors use Ollama's words.

/// One instruction: its name (lower case) and argument(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From(String),
    System(String),
    Template(String),
    License(String),
    Adapter(String),
    Parameter(String, String),
    Message(String, String),
}

const INVALID_COMMAND: &str = "command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"parameter\", or \"message\"";

/// Parse a Modelfile.
pub fn parse(text: &str) -> Result<Vec<Command>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // One instruction: skip blank lines and comments.
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let line = rest[..line_end].trim();
        if line.is_empty() || line.starts_with('#') {
            rest = &rest[(line_end + 1).min(rest.len())..];
            continue;
        }
        let start = rest.len() - rest.trim_start().len();
        let body = &rest[start..];
        let word_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let word = body[..word_end].to_ascii_lowercase();
        let (args, consumed) = argument(&body[word_end..])?;
        rest = &body[word_end + consumed..];
        let two = |args: &str| -> Result<(String, String), String> {
            let args = args.trim_start();
            let (a, b) =
                args.split_once(char::is_whitespace).ok_or_else(|| "missing value for ".to_string() + &word)?;
            Ok((a.to_string(), unquote(b.trim())))
        };
        out.push(match word.as_str() {
            "from" => Command::From(unquote(args.trim())),
            "system" => Command::System(unquote(args.trim())),
            "template" => Command::Template(unquote(args.trim())),
            "license" => Command::License(unquote(args.trim())),
            "adapter" => Command::Adapter(unquote(args.trim())),
            "parameter" => {
                let (k, v) = two(&args)?;
                Command::Parameter(k.to_ascii_lowercase(), v)
            }
            "message" => {
                let (role, content) = two(&args)?;
                if !["system", "user", "assistant"].contains(&role.as_str()) {
                    return Err("message role must be one of \"system\", \"user\", or \"assistant\"".into());
                }
                Command::Message(role, content)
            }
            _ => return Err(INVALID_COMMAND.into()),
        });
    }
    if !out.iter().any(|c| matches!(c, Command::From(_))) {
        return Err("no FROM line".into());
    }
    Ok(out)
}

/// The argument of an instruction: to the end of the line, or to the closing `"""` of a
/// triple-quoted string (kept with its quotes for `unquote`). Returns it and how much of
/// `s` it used.
fn argument(s: &str) -> Result<(String, usize), String> {
    let trimmed = s.trim_start_matches([' ', '\t']);
    let lead = s.len() - trimmed.len();
    // PARAMETER/MESSAGE have a first word before a possibly triple-quoted value.
    if let Some(q) = trimmed.find("\"\"\"")
        && !trimmed[..q].contains('\n')
    {
        let after = &trimmed[q + 3..];
        let close = after.find("\"\"\"").ok_or("unexpected EOF")?;
        let end = lead + q + 3 + close + 3;
        let line_end = s[end..].find('\n').map(|i| end + i + 1).unwrap_or(s.len());
        return Ok((s[..end].to_string(), line_end));
    }
    let line_end = s.find('\n').unwrap_or(s.len());
    Ok((s[..line_end].to_string(), (line_end + 1).min(s.len())))
}

/// `"""x"""` → x; `"x"` → x (with `\"` and `\\` unescaped); anything else as it is.
fn unquote(s: &str) -> String {
    if let Some(inner) = s.strip_prefix("\"\"\"").and_then(|r| r.strip_suffix("\"\"\"")) {
        return inner.to_string();
    }
    if s.len() >= 2
        && let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
    {
        return inner.replace("\\\"", "\"").replace("\\\\", "\\");
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_quotes_and_comments() {
        let text = "# a comment\nFROM llama3.2\nSYSTEM \"\"\"You are\na pirate.\"\"\"\nPARAMETER temperature 0.7\nparameter stop \"<|eot_id|>\"\nTEMPLATE {{ .Prompt }}\nLICENSE \"\"\"MIT\"\"\"\nMESSAGE user Hi there\nMESSAGE assistant \"\"\"Ahoy!\"\"\"\n";
        let cmds = parse(text).unwrap();
        assert_eq!(
            cmds,
            [
                Command::From("llama3.2".into()),
                Command::System("You are\na pirate.".into()),
                Command::Parameter("temperature".into(), "0.7".into()),
                Command::Parameter("stop".into(), "<|eot_id|>".into()),
                Command::Template("{{ .Prompt }}".into()),
                Command::License("MIT".into()),
                Command::Message("user".into(), "Hi there".into()),
                Command::Message("assistant".into(), "Ahoy!".into()),
            ]
        );
    }

    #[test]
    fn errors_use_ollamas_words() {
        assert_eq!(parse("SYSTEM hi\n").unwrap_err(), "no FROM line");
        assert_eq!(parse("FROM x\nSAIL away\n").unwrap_err(), INVALID_COMMAND);
        assert_eq!(parse("FROM x\nSYSTEM \"\"\"never closed\n").unwrap_err(), "unexpected EOF");
        assert!(parse("FROM x\nMESSAGE pirate arr\n").unwrap_err().starts_with("message role must be one of"));
    }
}
