//! The clinic dashboard (`GET /ui/`): a page, its ES modules and its style
//! sheet, built into the binary from `ui/` so that `make run` needs nothing
//! but the Rust toolchain. It serves files and nothing else: the page talks
//! to the same `/v1/{tenant}/...` API as any client, with the token it was
//! given. The Content-Security-Policy lets the page load and fetch only from
//! its own origin.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;

/// Scripts, styles, images and requests from this origin only; no inline
/// script, no frames, no plugins, no form posted elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Every file of the dashboard: (name under `/ui/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/api.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../ui/style.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../ui/icon.svg")),
];

fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found(format!("the dashboard has no file {name:?}")).into_response();
    };
    let mut response = (StatusCode::OK, *bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A new binary may carry new files under the same names: revalidate each load.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The dashboard's page.
/// The dashboard's routes (stateless), for a single node's router and a cluster node's.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    use axum::routing::get;
    axum::Router::new().route("/ui", get(redirect)).route("/ui/", get(index)).route("/ui/{file}", get(file))
}

pub async fn index() -> Response {
    asset("index.html")
}

/// `/ui` without its slash: the page's relative links need it.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// One of the page's files.
pub async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page names is served, so no request of the page 404s.
    #[test]
    fn the_page_names_only_files_it_is_served_with() {
        let page = std::str::from_utf8(ASSETS[0].2).unwrap();
        let app = std::str::from_utf8(ASSETS[1].2).unwrap();
        for (text, prefix) in [(page, "href=\""), (page, "src=\""), (app, "from './")] {
            for part in text.split(prefix).skip(1) {
                let name = part.split(['"', '\'']).next().unwrap();
                assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{name} is named but not served");
            }
        }
    }
}
