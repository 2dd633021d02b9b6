//! `/dashboard`: the page, its script and style, and the vendored uPlot, all compiled into the
//! binary so the page works offline and asks nothing of any host but this sluice.

/// One file of the dashboard, ready to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The page may load scripts, styles and data only from the sluice that served it. uPlot sets
/// element styles from script, hence `'unsafe-inline'` for styles (never for scripts).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; frame-ancestors 'none'";

/// Headers to send with every asset: the policy above, no sniffing, no caching across versions
/// (the files are small), no referrer to anywhere.
pub const HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-cache"),
    ("referrer-policy", "no-referrer"),
];

/// uPlot's version, as vendored from the npm registry into `assets/vendor/uplot/`.
pub const UPLOT_VERSION: &str = "1.6.32";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

const FILES: [(&str, Asset); 6] = [
    (
        "",
        Asset {
            content_type: HTML,
            body: include_bytes!("../assets/dashboard/index.html"),
        },
    ),
    (
        "app.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/dashboard/app.js"),
        },
    ),
    (
        "app.css",
        Asset {
            content_type: CSS,
            body: include_bytes!("../assets/dashboard/app.css"),
        },
    ),
    (
        "uplot.min.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/vendor/uplot/uPlot.iife.min.js"),
        },
    ),
    (
        "uplot.min.css",
        Asset {
            content_type: CSS,
            body: include_bytes!("../assets/vendor/uplot/uPlot.min.css"),
        },
    ),
    (
        "uplot-LICENSE",
        Asset {
            content_type: TEXT,
            body: include_bytes!("../assets/vendor/uplot/LICENSE"),
        },
    ),
];

/// The asset for a request path: `/dashboard` is the page, `/dashboard/<name>` its files.
/// `None` for anything else (a 404). The page links its files relative to `/dashboard`, so
/// `/dashboard/` (trailing slash) is best redirected to `/dashboard`.
pub fn asset(path: &str) -> Option<Asset> {
    let rest = path.strip_prefix("/dashboard")?;
    let name = match rest {
        "" | "/" => "",
        _ => rest.strip_prefix('/')?,
    };
    FILES
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, asset)| *asset)
}

/// The page itself.
pub fn page() -> Asset {
    FILES[0].1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(asset: Asset) -> &'static str {
        std::str::from_utf8(asset.body).unwrap()
    }

    #[test]
    fn page_and_files_are_served_under_dashboard() {
        assert_eq!(asset("/dashboard"), Some(page()));
        assert_eq!(asset("/dashboard/"), Some(page()));
        assert_eq!(asset("/dashboard/app.js").unwrap().content_type, JS);
        assert_eq!(asset("/dashboard/app.css").unwrap().content_type, CSS);
        assert!(text(asset("/dashboard/uplot.min.js").unwrap())
            .contains(&format!("(v{UPLOT_VERSION})")));
        assert!(text(asset("/dashboard/uplot-LICENSE").unwrap()).contains("MIT"));
        for missing in [
            "/dashboardx",
            "/dashboard/nope.js",
            "/dashboard/../app.js",
            "/dashboard//app.js",
            "/stats",
        ] {
            assert_eq!(asset(missing), None, "{missing}");
        }
    }

    #[test]
    fn every_file_the_page_links_is_served() {
        let html = text(page());
        let mut linked = 0;
        for attr in ["src=\"", "href=\""] {
            for piece in html.split(attr).skip(1) {
                let target = &piece[..piece.find('"').unwrap()];
                if target.starts_with("data:") {
                    continue;
                }
                let path = format!("/{target}");
                assert!(asset(&path).is_some(), "{target} is linked but not served");
                linked += 1;
            }
        }
        assert_eq!(
            linked, 4,
            "uPlot's script and style, the app's script and style"
        );
    }

    #[test]
    fn nothing_on_the_page_names_another_host() {
        for name in ["", "app.js", "app.css"] {
            let body = text(asset(&format!("/dashboard/{name}")).unwrap());
            for scheme in ["http://", "https://", "//cdn", "ws://", "wss://"] {
                assert!(!body.contains(scheme), "{name:?} contains {scheme}");
            }
        }
    }
}
