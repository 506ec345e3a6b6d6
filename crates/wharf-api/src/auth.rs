//! Who is calling, and may they? Authentication (bearer tokens on TCP; the unix socket,
//! mode 0600, is the server's owner and admin), authorization by role and app, and the
//! audit record of every mutating call.
//!
//! Invariants: on TCP, every route but `/healthz` needs a live token (401 otherwise);
//! a token acts only within its role and app (403 otherwise); `/v1/internal/*` is never
//! served to a token (secret claims have their own listener); every non-GET call is
//! audited with its outcome, including refused ones.

use crate::error::HttpError;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_controller::Controller;
use wharf_types::access::{AuditEntry, Role, TokenRecord};
use wharf_types::api::{ApiError, ErrorKind};

/// The caller of a request, available to handlers as an extension.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The unix socket: the server's own user.
    Local,
    Token(TokenRecord),
}

impl Principal {
    pub fn who(&self) -> String {
        match self {
            Self::Local => "local".into(),
            Self::Token(t) => t.id.clone(),
        }
    }
    /// Whether this caller may act on `app` (always, unless the token is scoped).
    pub fn may_touch(&self, app: &str) -> bool {
        match self {
            Self::Local => true,
            Self::Token(t) => t.app.as_ref().is_none_or(|a| a.as_str() == app),
        }
    }
}

/// Which listener a router serves.
#[derive(Clone)]
pub struct Gate {
    pub controller: Controller,
    pub local: bool,
}

fn refuse(kind: ErrorKind, error: String) -> Response {
    let status = match kind {
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    let mut r = (
        status,
        axum::Json(ApiError {
            kind,
            error,
            manifest: None,
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        if let Ok(v) = "Bearer".parse() {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

/// The app a path is about: `/v1/apps/{app}/...`.
fn path_app(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/apps/")?
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
}

/// The least role a call needs.
fn needs(method: &Method, path: &str) -> Role {
    let admin_only = path.starts_with("/v1/tokens")
        || path.starts_with("/v1/audit")
        || path.starts_with("/v1/secrets/")
        || (method == Method::DELETE && path_app(path).is_some());
    if admin_only {
        Role::Admin
    } else if method == Method::GET {
        Role::Viewer
    } else {
        Role::Deployer
    }
}

/// Checks a token's role and app against a call.
pub fn authorize(t: &TokenRecord, method: &Method, path: &str) -> Result<(), String> {
    let need = needs(method, path);
    if t.role < need {
        return Err(format!(
            "token {} is a {}; this call needs {need}",
            t.id, t.role
        ));
    }
    if let (Some(scope), Some(app)) = (&t.app, path_app(path)) {
        if scope.as_str() != app {
            return Err(format!(
                "token {} is limited to app {scope}, not {app}",
                t.id
            ));
        }
    }
    Ok(())
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The middleware: authenticate, authorize, run, audit.
pub async fn gate(State(g): State<Gate>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return next.run(req).await;
    }
    let c = &g.controller;
    let principal = if g.local {
        Principal::Local
    } else {
        match bearer(&req).map(|t| c.authenticate(t)) {
            Some(Ok(Some(t))) => Principal::Token(t),
            Some(Err(e)) => return HttpError::from(e).into_response(),
            Some(Ok(None)) | None => {
                let r = refuse(
                    ErrorKind::Unauthorized,
                    "missing, unknown or revoked token; send `Authorization: Bearer TOKEN` (the CLI sends $WHARF_TOKEN)".into(),
                );
                audit(c, "anonymous".into(), &method, &path, r.status());
                return r;
            }
        }
    };
    let denied = match &principal {
        Principal::Local => None,
        Principal::Token(_) if path.starts_with("/v1/internal/") => {
            Some("internal calls are not part of the TCP API".to_string())
        }
        Principal::Token(t) => authorize(t, &method, &path).err(),
    };
    if let Some(why) = denied {
        let r = refuse(ErrorKind::Forbidden, why);
        audit(c, principal.who(), &method, &path, r.status());
        return r;
    }
    let who = principal.who();
    req.extensions_mut().insert(principal);
    let r = next.run(req).await;
    if !path.starts_with("/v1/internal/") {
        audit(c, who, &method, &path, r.status());
    }
    r
}

fn audit(c: &Controller, who: String, method: &Method, path: &str, status: StatusCode) {
    if method == Method::GET {
        return;
    }
    let outcome = if status.is_success() {
        "ok".to_string()
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        format!("denied ({})", status.as_u16())
    } else {
        format!("failed ({})", status.as_u16())
    };
    c.record_audit(AuditEntry {
        at: c.now(),
        who,
        action: format!("{method} {path}"),
        app: path_app(path).map(str::to_string),
        outcome,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_types::AppName;

    fn token(role: Role, app: Option<&str>) -> TokenRecord {
        TokenRecord {
            id: "tok-1".into(),
            hash: String::new(),
            role,
            app: app.map(|a| AppName::new(a).unwrap()),
            created_at: 0,
            revoked_at: None,
        }
    }

    #[test]
    fn roles_and_scopes() {
        let viewer = token(Role::Viewer, None);
        assert!(authorize(&viewer, &Method::GET, "/v1/apps/a").is_ok());
        assert!(authorize(&viewer, &Method::POST, "/v1/deploy").is_err());
        assert!(authorize(&viewer, &Method::POST, "/v1/apps/a/scale").is_err());
        let dep_a = token(Role::Deployer, Some("a"));
        assert!(authorize(&dep_a, &Method::POST, "/v1/apps/a/secrets").is_ok());
        assert!(authorize(&dep_a, &Method::POST, "/v1/apps/b/secrets").is_err());
        assert!(authorize(&dep_a, &Method::GET, "/v1/apps/b").is_err());
        assert!(authorize(&dep_a, &Method::DELETE, "/v1/apps/a").is_err());
        assert!(authorize(&dep_a, &Method::POST, "/v1/tokens").is_err());
        assert!(authorize(&dep_a, &Method::GET, "/v1/audit").is_err());
        assert!(authorize(&dep_a, &Method::POST, "/v1/secrets/rotate-master-key").is_err());
        let admin = token(Role::Admin, None);
        assert!(authorize(&admin, &Method::DELETE, "/v1/apps/b").is_ok());
        assert!(authorize(&admin, &Method::POST, "/v1/tokens").is_ok());
    }
}
