//! Which topics a permission covers: an exact name, every name starting with a prefix
//! (`app.*` covers `app.web` and `app.db.slow`, not `app` itself), or `*` for all.

use myqueue_wire::check_topic_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    Exact(String),
    /// The prefix, with its trailing dot: `app.` for `app.*`.
    Prefix(String),
    Any,
}

impl TopicPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(TopicPattern::Any);
        }
        let (name, prefix) = match text.strip_suffix(".*") {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        check_topic_name(name)
            .map_err(|_| format!("{text:?} is not a topic name, `prefix.*` or `*`"))?;
        Ok(if prefix {
            TopicPattern::Prefix(format!("{name}."))
        } else {
            TopicPattern::Exact(name.to_owned())
        })
    }

    pub fn covers(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
            TopicPattern::Any => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TopicPattern;

    #[test]
    fn exact_prefix_and_any() {
        let exact = TopicPattern::parse("logs").unwrap();
        assert!(exact.covers("logs") && !exact.covers("logs2") && !exact.covers("log"));
        let prefix = TopicPattern::parse("app.*").unwrap();
        assert!(prefix.covers("app.web") && prefix.covers("app.db.slow"));
        assert!(!prefix.covers("app") && !prefix.covers("apple") && !prefix.covers("xapp.web"));
        assert!(TopicPattern::parse("*").unwrap().covers("anything"));
        for bad in ["", "a b", "app*", "*.x", "app.**", ".*"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
