//! Who is calling, and whether they may (`--auth-file`): the one filter every route but
//! `/healthz` goes through. It answers 401 `unauthorized` without a known token, and 403
//! `forbidden` where the path alone says what is needed (administering topics, describing a
//! topic, monitoring pages). Endpoints whose topic is in the body check it with [`produce`]
//! and [`consume`] once they have parsed it.

use super::error::ApiError;
use crate::app::{App, Caller};
use crate::auth::{Access, Auth};
use crate::network::serve::ClientAddr;
use myqueue_wire::ErrorCode;
use warp::http::Method;
use warp::{Filter, Rejection};

/// Paths that need the monitoring permission, where they exist (metrics, the dashboard).
const MONITORING: [&str; 2] = ["/metrics", "/ui"];

/// The request's [`App`], with its [`Caller`]; rejects callers that may not use the path.
pub fn authorized(app: App) -> impl Filter<Extract = (App,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::ext::optional::<ClientAddr>())
        .and_then(
            move |method: Method, path: warp::path::FullPath, header: Option<String>, client| {
                let app = app.clone();
                async move {
                    let access = identify(app.auth.as_deref(), header.as_deref())?;
                    allowed_path(&access, &method, path.as_str())?;
                    Ok::<_, Rejection>(with_caller(app, access, client))
                }
            },
        )
}

/// The request's [`App`] without any check: for `/healthz`, which load balancers probe.
pub fn open(app: App) -> impl Filter<Extract = (App,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<ClientAddr>()
        .map(move |client| with_caller(app.clone(), Access::Anonymous, client))
}

fn with_caller(mut app: App, access: Access, client: Option<ClientAddr>) -> App {
    app.caller = Caller {
        access,
        addr: client.map(|ClientAddr(addr)| addr.ip()),
    };
    app
}

fn identify(auth: Option<&Auth>, header: Option<&str>) -> Result<Access, ApiError> {
    let Some(auth) = auth else {
        return Ok(Access::Anonymous);
    };
    let header = header.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "this broker needs a token: send `Authorization: Bearer TOKEN`",
        )
    })?;
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "the Authorization header must be `Bearer TOKEN`",
            )
        })?;
    auth.identify(token)
        .map(Access::Token)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown token"))
}

fn allowed_path(access: &Access, method: &Method, path: &str) -> Result<(), ApiError> {
    let topic = path.strip_prefix("/topics/").filter(|t| !t.is_empty());
    let allowed = match (method, path, topic) {
        (&Method::POST, "/topics", _) => access.may_administer(),
        (&Method::PATCH | &Method::DELETE, _, Some(_)) => access.may_administer(),
        (_, _, Some(topic)) => access.may_see(topic),
        _ if MONITORING
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/"))) =>
        {
            access.may_monitor()
        }
        _ => true,
    };
    if allowed {
        return Ok(());
    }
    let what = match (method, topic) {
        (&Method::GET, Some(topic)) => format!("see topic '{topic}'"),
        (_, Some(_)) | (&Method::POST, None) if !MONITORING.iter().any(|p| path.starts_with(p)) => {
            "administer topics".to_owned()
        }
        _ => format!("read {path} (needs monitor)"),
    };
    Err(forbidden(access, &what))
}

/// 403 unless the caller may produce to `topic`.
pub fn produce(app: &App, topic: &str) -> Result<(), ApiError> {
    match app.caller.access.may_produce(topic) {
        true => Ok(()),
        false => Err(forbidden(
            &app.caller.access,
            &format!("produce to topic '{topic}'"),
        )),
    }
}

/// 403 unless the caller may consume from `topic`.
pub fn consume(app: &App, topic: &str) -> Result<(), ApiError> {
    match app.caller.access.may_consume(topic) {
        true => Ok(()),
        false => Err(forbidden(
            &app.caller.access,
            &format!("consume from topic '{topic}'"),
        )),
    }
}

fn forbidden(access: &Access, what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("token '{}' may not {what}", access.name()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::TokenHash;
    use crate::auth::{Grant, TopicPattern};
    use std::sync::Arc;

    fn token(admin: bool, monitor: bool) -> Access {
        Access::Token(Arc::new(Grant {
            name: "t".into(),
            hash: TokenHash::of("t"),
            produce: vec![TopicPattern::parse("app.*").unwrap()],
            consume: vec![],
            admin,
            monitor,
        }))
    }

    #[test]
    fn the_path_says_what_is_needed() {
        let plain = token(false, false);
        let code = |r: Result<(), ApiError>| r.err().map(|e| e.code);
        let forbidden = Some(ErrorCode::Forbidden);
        assert_eq!(
            code(allowed_path(&plain, &Method::POST, "/topics")),
            forbidden
        );
        assert_eq!(
            code(allowed_path(&plain, &Method::DELETE, "/topics/app.x")),
            forbidden
        );
        assert_eq!(
            code(allowed_path(&plain, &Method::PATCH, "/topics/app.x")),
            forbidden
        );
        assert_eq!(
            code(allowed_path(&plain, &Method::GET, "/topics/app.x")),
            None
        );
        assert_eq!(
            code(allowed_path(&plain, &Method::GET, "/topics/logs")),
            forbidden
        );
        assert_eq!(
            code(allowed_path(&plain, &Method::GET, "/metrics")),
            forbidden
        );
        assert_eq!(
            code(allowed_path(&plain, &Method::GET, "/ui/app.js")),
            forbidden
        );
        assert_eq!(code(allowed_path(&plain, &Method::GET, "/topics")), None);
        assert_eq!(
            code(allowed_path(&plain, &Method::POST, "/producer/produce")),
            None
        );
        let monitor = token(false, true);
        assert_eq!(code(allowed_path(&monitor, &Method::GET, "/metrics")), None);
        assert_eq!(code(allowed_path(&monitor, &Method::GET, "/ui")), None);
        let admin = token(true, false);
        assert_eq!(
            code(allowed_path(&admin, &Method::DELETE, "/topics/logs")),
            None
        );
        assert_eq!(
            code(allowed_path(&admin, &Method::GET, "/topics/logs")),
            None
        );
    }

    #[test]
    fn tokens_come_as_bearer() {
        let code = |r: Result<Access, ApiError>| r.err().map(|e| e.code);
        assert!(matches!(identify(None, None), Ok(Access::Anonymous)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        let entry = format!(
            "[tokens.a]\nsha256 = \"{}\"\n",
            TokenHash::of("s3cret").to_hex()
        );
        std::fs::write(&path, entry).unwrap();
        let auth = Auth::load(&path).unwrap();
        let unauthorized = Some(ErrorCode::Unauthorized);
        assert_eq!(code(identify(Some(&auth), None)), unauthorized);
        assert_eq!(
            code(identify(Some(&auth), Some("Basic s3cret"))),
            unauthorized
        );
        assert_eq!(
            code(identify(Some(&auth), Some("Bearer nope"))),
            unauthorized
        );
        assert_eq!(code(identify(Some(&auth), Some("bearer s3cret"))), None);
    }
}
