//! Query strings as kube-apiserver reads them (`application/x-www-form-urlencoded`), and the
//! percent-encoding of the values and path segments the tiers send one another.

use std::collections::HashMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved bytes is escaped.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode a query value or path segment (everything but RFC 3986 unreserved bytes).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// A parsed query string (a repeated parameter's value is its last; [`Query::all`] has each).
#[derive(Default, Debug)]
pub struct Query(HashMap<String, String>, Vec<(String, String)>);

impl Query {
    /// Parse `a=b&c=d` (`+` is a space; malformed escapes stay as they are).
    pub fn parse(q: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Query(pairs.iter().cloned().collect(), pairs)
    }
    /// Every value of a repeated parameter, in order (`command=sh&command=-c`).
    pub fn all(&self, k: &str) -> Vec<&str> {
        self.1
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// A parameter.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    /// A boolean parameter, read as kube-apiserver reads one: absent is false; `0` and `false`
    /// (any case) are false; any other value, the empty one included, is true (so `1`, `t`,
    /// `True`, `TRUE` and bare `?watch` all mean true).
    pub fn flag(&self, k: &str) -> bool {
        match self.get(k) {
            None => false,
            Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        for (v, want) in [
            ("1", true),
            ("t", true),
            ("T", true),
            ("TRUE", true),
            ("True", true),
            ("true", true),
            ("", true),
            ("0", false),
            ("false", false),
            ("False", false),
            ("FALSE", false),
        ] {
            assert_eq!(
                Query::parse(Some(&format!("w={v}"))).flag("w"),
                want,
                "{v:?}"
            );
        }
        assert!(Query::parse(Some("w")).flag("w"));
        assert!(!Query::parse(Some("x=1")).flag("w"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(Query::parse(Some("a=%zz%4")).get("a"), Some("%zz%4"));
    }

    #[test]
    fn encoding_keeps_unreserved_bytes_only() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            percent_encode("app=web,x y/é"),
            "app%3Dweb%2Cx%20y%2F%C3%A9"
        );
        let q = Query::parse(Some(&format!("v={}", percent_encode("a b&c=d"))));
        assert_eq!(q.get("v"), Some("a b&c=d"));
    }
}
