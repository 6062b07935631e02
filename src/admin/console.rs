//! The web console: a page on the admin listener (`/`, also `/console/`) that lists the live
//! streams from the JSON API, draws each one's bitrate in and out and its viewers, lists its
//! clients with a kick button, and plays it in the page over HTTP-FLV or WebSocket-FLV with
//! mpegts.js.
//!
//! Everything is plain HTML, CSS and JavaScript under `src/admin/console/`, built into the
//! binary with `include_str!`/`include_bytes!`: nothing to install or build beside it. The
//! page learns the media HTTP listener's port from `/api/v1/summaries`
//! (`data.shardcast.http_port`) and plays from `location.hostname` on that port, so it works
//! through whatever host name the operator opened it by. mpegts.js is vendored unchanged in
//! `src/admin/console/vendor/` (its version in `VERSION`; the README says how to update it).
//!
//! Routes (GET and HEAD): `/`, `/console`, `/console/` → the page; `/console/app.js`,
//! `/console/style.css`, `/console/vendor/mpegts.js` and its license files.

use super::request::AdminResponse;

/// The vendored mpegts.js's version; the page asks for `mpegts.js?v=` this, so a new
/// version is never read from a browser's cache of the old one.
pub const MPEGTS_VERSION: &str = "1.8.2";

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");
const MPEGTS_JS: &[u8] = include_bytes!("console/vendor/mpegts.js");
const MPEGTS_LICENSE: &str = include_str!("console/vendor/LICENSE.mpegts.js");
const MPEGTS_BUNDLED_LICENSES: &str = include_str!("console/vendor/mpegts.js.LICENSE.txt");

/// The page's own files change with the binary and are small: asked for again each load.
const REVALIDATE: &str = "no-cache";
/// mpegts.js is asked for by version, so it may be kept.
const KEEP: &str = "public, max-age=604800, immutable";

/// Where the page may load from and connect to: only this listener, except media from the
/// HTTP-FLV listener (another port, so any `http:`/`ws:` origin) played through a `blob:`.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     media-src 'self' blob:; connect-src 'self' http: https: ws: wss:; worker-src 'self' blob:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Whether `segments` (the path split at `/`, without the leading one) is a console file.
pub fn is_console_path(segments: &[&str]) -> bool {
    file(segments).is_some()
}

/// The answer to `GET` of a console file; `None` if `segments` names none.
pub fn serve(segments: &[&str]) -> Option<AdminResponse> {
    let (content_type, cache, body): (&'static str, &str, &'static [u8]) = file(segments)?;
    let mut r = AdminResponse::text(200, content_type, body);
    r.headers.push(("Cache-Control", cache.to_owned()));
    r.headers
        .push(("X-Content-Type-Options", "nosniff".to_owned()));
    if content_type.starts_with("text/html") {
        r.headers.push(("Content-Security-Policy", CSP.to_owned()));
        r.headers.push(("X-Frame-Options", "DENY".to_owned()));
        r.headers
            .push(("Referrer-Policy", "same-origin".to_owned()));
    }
    Some(r)
}

fn file(segments: &[&str]) -> Option<(&'static str, &'static str, &'static [u8])> {
    Some(match segments {
        [""] | ["console"] | ["console", ""] | ["console", "index.html"] => (
            "text/html; charset=utf-8",
            REVALIDATE,
            INDEX_HTML.as_bytes(),
        ),
        ["console", "app.js"] => (
            "text/javascript; charset=utf-8",
            REVALIDATE,
            APP_JS.as_bytes(),
        ),
        ["console", "style.css"] => ("text/css; charset=utf-8", REVALIDATE, STYLE_CSS.as_bytes()),
        ["console", "vendor", "mpegts.js"] => ("text/javascript; charset=utf-8", KEEP, MPEGTS_JS),
        ["console", "vendor", "LICENSE.mpegts.js"] => {
            ("text/plain; charset=utf-8", KEEP, MPEGTS_LICENSE.as_bytes())
        }
        ["console", "vendor", "mpegts.js.LICENSE.txt"] => (
            "text/plain; charset=utf-8",
            KEEP,
            MPEGTS_BUNDLED_LICENSES.as_bytes(),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a AdminResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_page_and_its_files_are_served_with_their_types() {
        for root in [&[""][..], &["console"], &["console", ""]] {
            let page = serve(root).unwrap();
            assert_eq!(page.status, 200);
            assert_eq!(page.content_type, "text/html; charset=utf-8");
            assert_eq!(header(&page, "Cache-Control"), Some("no-cache"));
            assert!(header(&page, "Content-Security-Policy").is_some());
            let html = std::str::from_utf8(&page.body).unwrap();
            assert!(html.contains("/console/app.js"));
            assert!(html.contains(&format!("/console/vendor/mpegts.js?v={MPEGTS_VERSION}")));
        }
        let js = serve(&["console", "app.js"]).unwrap();
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        let css = serve(&["console", "style.css"]).unwrap();
        assert_eq!(css.content_type, "text/css; charset=utf-8");
        let mpegts = serve(&["console", "vendor", "mpegts.js"]).unwrap();
        assert!(mpegts.body.len() > 100_000);
        assert!(
            header(&mpegts, "Cache-Control")
                .unwrap()
                .contains("max-age")
        );
        assert!(serve(&["console", "vendor", "LICENSE.mpegts.js"]).is_some());
        assert!(serve(&["console", "nope.js"]).is_none());
        assert!(serve(&["console", "vendor", "mpegts.js.map"]).is_none());
    }

    #[test]
    fn the_vendored_version_is_the_one_named() {
        assert_eq!(
            include_str!("console/vendor/VERSION").trim(),
            MPEGTS_VERSION
        );
    }
}
