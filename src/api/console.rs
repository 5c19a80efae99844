//! The web console (DESIGN §12): a static HTML shell at `/` and its scripts and styles under
//! `/console/<version>/`, all compiled into the binary from the repository's `console/`
//! folder. Nothing is fetched from another host and no build step is involved.
//!
//! The shell is open and carries no data: a browser navigation cannot send a bearer
//! header, so the page's modules ask for a token (kept in `sessionStorage`) and read and
//! act only through the `/v1` API with it. `<version>` is a digest of every asset, computed
//! once at start-up: asset answers may then be cached forever (`immutable`), and relative
//! module imports (`./api.js`) stay valid without rewriting. The shell itself is `no-cache`.
//! Every answer carries a strict Content-Security-Policy: scripts and styles from this
//! origin only, no inline code, no `eval`, no framing.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, web};
use sha2::{Digest, Sha256};

use super::ApiError;

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $content_type:expr),+ $(,)?) => {
        /// Every asset served under `/console/<version>/`.
        const ASSETS: &[Asset] = &[$(Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $name)),
        }),+];
    };
}

const JS: &str = "text/javascript; charset=utf-8";

assets! {
    "app.js" => JS,
    "api.js" => JS,
    "util.js" => JS,
    "dag.js" => JS,
    "diff.js" => JS,
    "form.js" => JS,
    "decide.js" => JS,
    "workflows.js" => JS,
    "runs.js" => JS,
    "run.js" => JS,
    "rerun.js" => JS,
    "activity.js" => JS,
    "triggers.js" => JS,
    "server.js" => JS,
    "queues.js" => JS,
    "style.css" => "text/css; charset=utf-8",
    "icon.svg" => "image/svg+xml",
}

/// The shell; `{{assets}}` becomes `/console/<version>`.
const SHELL: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/index.html"));

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

struct Built {
    version: String,
    shell: String,
}

static BUILT: LazyLock<Built> = LazyLock::new(|| {
    let version = version_of(ASSETS);
    let shell = SHELL.replace("{{assets}}", &format!("/console/{version}"));
    Built { version, shell }
});

/// A digest of every asset's name and content: any change gives a new version.
fn version_of(assets: &[Asset]) -> String {
    let mut hasher = Sha256::new();
    for asset in assets {
        hasher.update(asset.name.as_bytes());
        hasher.update((asset.body.len() as u64).to_be_bytes());
        hasher.update(asset.body);
    }
    hex::encode(&hasher.finalize()[..6])
}

/// The path an asset is served at, e.g. `/console/3f2a…/app.js`.
pub fn asset_path(name: &str) -> String {
    format!("/console/{}/{name}", BUILT.version)
}

/// Security headers of every console answer.
fn secured(mut answer: HttpResponseBuilder) -> HttpResponseBuilder {
    answer
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"));
    answer
}

/// `GET /`: the console's shell page.
pub(super) async fn shell() -> HttpResponse {
    secured(HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(BUILT.shell.as_str())
}

/// `GET /console/{version}/{file}`: an asset of the current version; any other is `404`
/// (an old version must not be cached forever under a name it no longer has).
pub(super) async fn asset(path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (version, file) = path.into_inner();
    let found = ASSETS
        .iter()
        .find(|a| a.name == file)
        .filter(|_| version == BUILT.version)
        .ok_or_else(|| ApiError::NotFound(format!("no console asset {version}/{file}")))?;
    Ok(secured(HttpResponse::Ok())
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(found.content_type),
        ))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(found.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: &Asset) -> &str {
        std::str::from_utf8(asset.body).unwrap()
    }

    #[test]
    fn the_version_changes_with_any_asset() {
        let a = [Asset {
            name: "a.js",
            content_type: JS,
            body: b"1",
        }];
        let b = [Asset {
            name: "a.js",
            content_type: JS,
            body: b"2",
        }];
        assert_eq!(version_of(&a), version_of(&a));
        assert_ne!(version_of(&a), version_of(&b));
        assert_eq!(BUILT.version.len(), 12);
    }

    #[test]
    fn every_file_the_shell_and_modules_name_is_an_asset() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        let mut wanted: Vec<String> = Vec::new();
        for part in SHELL.split("{{assets}}/").skip(1) {
            wanted.push(part.split('"').next().unwrap().to_owned());
        }
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for part in text(asset).split("from './").skip(1) {
                wanted.push(part.split('\'').next().unwrap().to_owned());
            }
        }
        assert!(wanted.contains(&"app.js".to_owned()), "{wanted:?}");
        for name in &wanted {
            assert!(names.contains(&name.as_str()), "{name} is not an asset");
        }
    }

    #[test]
    fn no_asset_holds_inline_code_or_a_foreign_url() {
        assert!(!SHELL.contains("<script>") && !SHELL.contains("style="));
        for asset in ASSETS.iter().filter(|a| a.name != "icon.svg") {
            // The SVG namespace is a name, never fetched.
            let body = text(asset).replace("http://www.w3.org/2000/svg", "");
            for banned in ["http://", "https://", "eval(", "new Function", "innerHTML"] {
                assert!(!body.contains(banned), "{} contains {banned}", asset.name);
            }
        }
    }
}
