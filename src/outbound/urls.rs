//! The URLs network calls may use: absolute `http`/`https` only, and a base URL joined
//! with a path without losing the base's own path prefix.

use url::Url;

/// A URL that cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{text:?} is not an absolute URL: {source}")]
    Malformed {
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{text:?}: only http and https URLs are allowed, not {scheme}")]
    Scheme { text: String, scheme: String },
}

/// Parses an absolute `http`/`https` URL.
pub fn parse_http_url(text: &str) -> Result<Url, UrlError> {
    let url = Url::parse(text).map_err(|source| UrlError::Malformed {
        text: text.to_owned(),
        source,
    })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(UrlError::NoHost(text.to_owned())),
        other => Err(UrlError::Scheme {
            text: text.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

/// `base` followed by `path`, keeping any path prefix of `base` (`http://h/api` + `/v1/x`
/// is `http://h/api/v1/x`, where `Url::join` would drop `/api`).
pub fn join(base: &Url, path: &str) -> Result<Url, UrlError> {
    let text = format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    Url::parse(&text).map_err(|source| UrlError::Malformed { text, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls_with_a_host_are_accepted() {
        assert!(parse_http_url("https://example.com/x").is_ok());
        assert!(matches!(
            parse_http_url("ftp://example.com/"),
            Err(UrlError::Scheme { .. })
        ));
        assert!(matches!(
            parse_http_url("/relative"),
            Err(UrlError::Malformed { .. })
        ));
    }

    #[test]
    fn joining_keeps_the_path_prefix_of_the_base() {
        let base = Url::parse("http://h:1/api/").unwrap();
        assert_eq!(
            join(&base, "/v1/x").unwrap().as_str(),
            "http://h:1/api/v1/x"
        );
    }
}
