//! The auth file (`--auth-file`, TOML): one table per named token.
//!
//! ```toml
//! [tokens.ingest]
//! sha256 = "…64 hex digits from `myqueue-broker hash-token`…"
//! produce = ["logs", "app.*"]     # exact names, `prefix.*`, or "*" for every topic
//! consume = []
//! admin = false                   # create, change and delete topics
//! monitor = false                 # /metrics and the dashboard
//! ```

use super::pattern::TopicPattern;
use super::token::TokenHash;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What one token may do.
#[derive(Debug, Clone)]
pub struct Grant {
    pub name: String,
    pub hash: TokenHash,
    pub produce: Vec<TopicPattern>,
    pub consume: Vec<TopicPattern>,
    pub admin: bool,
    pub monitor: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    tokens: BTreeMap<String, TokenShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenShape {
    sha256: String,
    #[serde(default)]
    produce: Vec<String>,
    #[serde(default)]
    consume: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    monitor: bool,
}

/// Reads and checks the whole file: any mistake refuses all of it, naming the token.
pub fn load(path: &Path) -> Result<Vec<Grant>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the auth file {}: {err}", path.display()))?;
    parse(&text).map_err(|err| format!("auth file {}: {err}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<Grant>, String> {
    let file: FileShape = toml::from_str(text).map_err(|err| err.to_string())?;
    let mut grants: Vec<Grant> = Vec::with_capacity(file.tokens.len());
    for (name, token) in file.tokens {
        let hash = TokenHash::parse(&token.sha256).map_err(|err| format!("token {name}: {err}"))?;
        if let Some(other) = grants.iter().find(|g| g.hash == hash) {
            return Err(format!(
                "tokens {} and {name} have the same sha256",
                other.name
            ));
        }
        let patterns = |list: Vec<String>| {
            list.iter()
                .map(|p| TopicPattern::parse(p).map_err(|err| format!("token {name}: {err}")))
                .collect::<Result<Vec<_>, _>>()
        };
        grants.push(Grant {
            produce: patterns(token.produce)?,
            consume: patterns(token.consume)?,
            admin: token.admin,
            monitor: token.monitor,
            hash,
            name,
        });
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn reads_tokens_with_defaults() {
        let grants = parse(&format!(
            "[tokens.ingest]\nsha256 = \"{HASH}\"\nproduce = [\"logs\", \"app.*\"]\n"
        ))
        .unwrap();
        assert_eq!(grants.len(), 1);
        let ingest = &grants[0];
        assert_eq!(ingest.name, "ingest");
        assert_eq!(ingest.produce.len(), 2);
        assert!(ingest.consume.is_empty() && !ingest.admin && !ingest.monitor);
    }

    #[test]
    fn refuses_mistakes_naming_the_token() {
        let bad = [
            (
                format!("[tokens.a]\nsha256 = \"{HASH}\"\nproduce = [\"a b\"]\n"),
                "token a",
            ),
            ("[tokens.a]\nsha256 = \"xyz\"\n".to_owned(), "token a"),
            (
                format!("[tokens.a]\nsha256 = \"{HASH}\"\nadmn = true\n"),
                "admn",
            ),
            (
                format!("[tokens.a]\nsha256 = \"{HASH}\"\n[tokens.b]\nsha256 = \"{HASH}\"\n"),
                "same sha256",
            ),
            ("[tokens.a]\nproduce = []\n".to_owned(), "sha256"),
        ];
        for (text, says) in bad {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
