//! The dashboard's files, compiled into the binary (no CDN, no build step): plain HTML, CSS
//! and JavaScript that read the public API (`/healthz`, `/topics`, `/topics/{name}`,
//! `/consumer/fetch`).

/// One file of the dashboard.
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

/// The file at `path` under `/ui/` (`""` is the page itself).
pub fn asset(path: &str) -> Option<Asset> {
    let (body, content_type) = match path {
        "" | "index.html" => (
            include_str!("../../ui/index.html"),
            "text/html; charset=utf-8",
        ),
        "app.js" => (
            include_str!("../../ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            include_str!("../../ui/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    Some(Asset { body, content_type })
}
