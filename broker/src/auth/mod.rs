//! Who may do what (`--auth-file`): named bearer tokens, each allowed to produce to and
//! consume from some topics, to administer topics, and to read monitoring pages.
//!
//! [`Auth`] is the shared, reloadable set of tokens; [`Access`] is what one request's caller
//! may do. Without an auth file every caller has [`Access::Anonymous`], which allows all.

mod file;
pub mod hash_command;
mod pattern;
pub mod token;

pub use file::Grant;
pub use pattern::TopicPattern;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use token::TokenHash;

/// The tokens of the auth file, replaced as a whole on reload (SIGHUP): requests in flight
/// keep the [`Access`] they started with, and no connection is dropped.
pub struct Auth {
    path: PathBuf,
    grants: RwLock<Arc<Vec<Arc<Grant>>>>,
}

impl Auth {
    pub fn load(path: &Path) -> Result<Self, String> {
        let grants = file::load(path)?;
        Ok(Auth {
            path: path.to_owned(),
            grants: RwLock::new(Arc::new(grants.into_iter().map(Arc::new).collect())),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn token_count(&self) -> usize {
        self.current().len()
    }

    /// Reads the file again. A file that cannot be read or has a mistake changes nothing: the
    /// tokens in force stay, and the error says why.
    pub fn reload(&self) -> Result<usize, String> {
        let grants: Vec<Arc<Grant>> = file::load(&self.path)?.into_iter().map(Arc::new).collect();
        let count = grants.len();
        *self.grants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(grants);
        Ok(count)
    }

    /// The grant of the token presented, if it is one of ours. Every hash is compared, each in
    /// constant time.
    pub fn identify(&self, token: &str) -> Option<Arc<Grant>> {
        let presented = TokenHash::of(token);
        let mut found = None;
        for grant in self.current().iter() {
            if grant.hash.matches(&presented) {
                found = Some(grant.clone());
            }
        }
        found
    }

    fn current(&self) -> Arc<Vec<Arc<Grant>>> {
        self.grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the caller of one request may do.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// No auth file: every caller may do everything (loopback, or `--allow-anonymous`).
    #[default]
    Anonymous,
    Token(Arc<Grant>),
}

impl Access {
    pub fn may_produce(&self, topic: &str) -> bool {
        self.covered(topic, |g| &g.produce)
    }

    pub fn may_consume(&self, topic: &str) -> bool {
        self.covered(topic, |g| &g.consume)
    }

    /// Create, change and delete topics (and see all of them).
    pub fn may_administer(&self) -> bool {
        match self {
            Access::Anonymous => true,
            Access::Token(grant) => grant.admin,
        }
    }

    /// `/metrics` and the dashboard.
    pub fn may_monitor(&self) -> bool {
        match self {
            Access::Anonymous => true,
            Access::Token(grant) => grant.monitor,
        }
    }

    /// Whether `GET /topics` lists the topic and `GET /topics/{name}` describes it.
    pub fn may_see(&self, topic: &str) -> bool {
        self.may_administer() || self.may_produce(topic) || self.may_consume(topic)
    }

    /// The token's name for logs, `anonymous` without an auth file.
    pub fn name(&self) -> &str {
        match self {
            Access::Anonymous => "anonymous",
            Access::Token(grant) => &grant.name,
        }
    }

    fn covered(&self, topic: &str, list: impl Fn(&Grant) -> &Vec<TopicPattern>) -> bool {
        match self {
            Access::Anonymous => true,
            Access::Token(grant) => list(grant).iter().any(|p| p.covers(topic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(text: &str) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, text).unwrap();
        let auth = Auth::load(&path).unwrap();
        (dir, auth)
    }

    fn entry(name: &str, token: &str, rest: &str) -> String {
        format!(
            "[tokens.{name}]\nsha256 = \"{}\"\n{rest}\n",
            TokenHash::of(token).to_hex()
        )
    }

    #[test]
    fn tokens_get_their_own_permissions() {
        let (_dir, auth) = auth_with(&format!(
            "{}{}",
            entry("ingest", "t1", "produce = [\"app.*\"]"),
            entry(
                "ops",
                "t2",
                "admin = true\nmonitor = true\nconsume = [\"*\"]"
            ),
        ));
        assert!(auth.identify("nope").is_none());
        let ingest = Access::Token(auth.identify("t1").unwrap());
        assert_eq!(ingest.name(), "ingest");
        assert!(ingest.may_produce("app.web") && !ingest.may_produce("logs"));
        assert!(!ingest.may_consume("app.web") && !ingest.may_administer());
        assert!(ingest.may_see("app.web") && !ingest.may_see("logs") && !ingest.may_monitor());
        let ops = Access::Token(auth.identify("t2").unwrap());
        assert!(ops.may_administer() && ops.may_monitor() && ops.may_consume("x"));
        assert!(!ops.may_produce("x") && ops.may_see("x"));
        assert!(Access::Anonymous.may_produce("x") && Access::Anonymous.may_monitor());
    }

    #[test]
    fn a_bad_reload_keeps_the_tokens_in_force() {
        let (dir, auth) = auth_with(&entry("a", "t1", ""));
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, "[tokens.a]\nsha256 = \"short\"\n").unwrap();
        assert!(auth.reload().unwrap_err().contains("token a"));
        assert!(auth.identify("t1").is_some());
        std::fs::write(&path, entry("b", "t2", "")).unwrap();
        assert_eq!(auth.reload(), Ok(1));
        assert!(auth.identify("t1").is_none() && auth.identify("t2").is_some());
    }
}
