//! The replay page's filter, from a query string or a form: the same `ReplayFilter` the CLI
//! builds, checked field by field so a malformed value is a 400 naming the field.

use crate::replay::{self, ReplayFilter};

/// The default and the cap of a filter's limit (the CLI's default is the cap).
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// A request's fields, in order, percent-decoded.
pub type Fields = Vec<(String, String)>;

pub fn fields(query: &str) -> Fields {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A field's value, trimmed; `None` when absent or blank.
pub fn field<'a>(f: &'a Fields, name: &str) -> Option<&'a str> {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A bad value: the field and why; the page answers 400 with it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct BadInput {
    pub field: &'static str,
    pub why: String,
}

fn bad(field: &'static str, why: impl Into<String>) -> BadInput {
    BadInput {
        field,
        why: why.into(),
    }
}

/// Text a filter field may hold: short, printable.
fn name(f: &Fields, key: &'static str) -> Result<Option<String>, BadInput> {
    match field(f, key) {
        None => Ok(None),
        Some(v) if v.chars().count() > 512 => Err(bad(key, "longer than 512 characters")),
        Some(v) if v.chars().any(char::is_control) => Err(bad(key, "holds control characters")),
        Some(v) => Ok(Some(v.to_string())),
    }
}

/// The filter the fields name. `ids`, when present, pins the events (the confirm step
/// carries the ids the preview showed, so nothing else can move).
pub fn parse(f: &Fields) -> Result<ReplayFilter, BadInput> {
    let time = |key: &'static str| {
        field(f, key)
            .map(|v| replay::parse_time(v).map_err(|e| bad(key, e)))
            .transpose()
    };
    let limit = match field(f, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(bad("limit", format!("{v:?}: expected 1 to {MAX_LIMIT}"))),
        },
    };
    let ids = match field(f, "ids") {
        None => None,
        Some(v) => Some(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<i64>()
                        .map_err(|_| bad("ids", format!("{s:?} is not an event id")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    if ids.as_ref().is_some_and(|i| i.len() as i64 > MAX_LIMIT) {
        return Err(bad("ids", format!("more than {MAX_LIMIT} ids")));
    }
    let filter = ReplayFilter {
        ids,
        error_reason: name(f, "error_reason")?,
        failed_since: time("since")?,
        failed_before: time("until")?,
        projection: name(f, "projection")?,
        index_name: name(f, "index")?,
        limit,
    };
    if let (Some(a), Some(b)) = (filter.failed_since, filter.failed_before)
        && a >= b
    {
        return Err(bad("until", "must be later than since"));
    }
    Ok(filter)
}

/// Whether the fields name any filter at all (else the page shows the empty form).
pub fn names_a_filter(f: &Fields) -> bool {
    [
        "error_reason",
        "index",
        "projection",
        "since",
        "until",
        "ids",
    ]
    .iter()
    .any(|k| field(f, k).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_filter_parses() {
        let f = fields(
            "error_reason=mapper_parsing_exception&index=orders&projection=p&since=2026-01-01T00%3A00%3A00Z&until=2h&limit=50",
        );
        let r = parse(&f).unwrap();
        assert_eq!(r.error_reason.as_deref(), Some("mapper_parsing_exception"));
        assert_eq!(r.index_name.as_deref(), Some("orders"));
        assert_eq!(r.projection.as_deref(), Some("p"));
        assert_eq!(
            r.failed_since.unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert!(r.failed_before.is_some());
        assert_eq!(r.limit, 50);
        assert_eq!(r.ids, None);
        assert!(names_a_filter(&f));
    }

    #[test]
    fn blank_fields_are_absent() {
        let f = fields("error_reason=&index=+&limit=");
        let r = parse(&f).unwrap();
        assert!(r.is_unbounded());
        assert_eq!(r.limit, DEFAULT_LIMIT);
        assert!(!names_a_filter(&f));
    }

    #[test]
    fn malformed_values_name_their_field() {
        for (q, field) in [
            ("since=yesterday", "since"),
            ("until=5w", "until"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("ids=1,x", "ids"),
            ("since=2h&until=3h", "until"),
            ("index=a%00b", "index"),
        ] {
            assert_eq!(parse(&fields(q)).unwrap_err().field, field, "{q}");
        }
    }

    #[test]
    fn ids_pin_the_events() {
        let r = parse(&fields("ids=3,%201,2&error_reason=x")).unwrap();
        assert_eq!(r.ids, Some(vec![3, 1, 2]));
        // A blank list (the form's hidden field when no id was given) is no filter.
        assert_eq!(parse(&fields("ids=&error_reason=x")).unwrap().ids, None);
        assert_eq!(parse(&fields("ids=,")).unwrap().ids, Some(vec![]));
    }
}
