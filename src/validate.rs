//! The rules a command's values must meet before it is submitted, and their
//! limits: text and names, dates, times, counts and ids. Pure functions over
//! values, so that the handlers, the fuzz targets and the offline commands
//! apply the very same checks; it knows nothing of HTTP, JSON, the writer or
//! the log (`http::error` renders an [`Invalid`] as a problem document).

use chrono::{NaiveDate, NaiveTime, Timelike};
use uuid::Uuid;

/// A name's characters, at most: clinic, doctor, business, campaign, and a
/// provider's id, a community's owner and plan.
pub const NAME_CHARS_MAX: usize = 128;
pub const PATIENT_CHARS_MAX: usize = 200;
/// An external calendar's booking id or correlation id.
pub const REF_CHARS_MAX: usize = 255;
pub const REASON_CHARS_MAX: usize = 1000;
pub const COMMUNITY_NAME_CHARS_MAX: usize = 200;
pub const SLOTS_PER_DAY_MAX: u32 = 1000;
pub const SLOT_MINUTES_MAX: u32 = 480;

/// A value a command may not carry: the field that holds it and what is wrong
/// with it. `http::error` answers each with the problem API.md names for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A field outside its rules: 400 `invalid_request`.
    #[error("{field}: {detail}")]
    Field { field: &'static str, detail: String },
}

impl Invalid {
    pub fn field(field: &'static str, detail: impl Into<String>) -> Invalid {
        Invalid::Field { field, detail: detail.into() }
    }
}

/// A text field: 1..=`chars_max` characters, none of them control characters.
pub fn check_text(field: &'static str, value: &str, chars_max: usize) -> Result<(), Invalid> {
    let chars = value.chars().count();
    if chars == 0 || chars > chars_max {
        return Err(Invalid::field(field, format!("must be 1 to {chars_max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::field(field, "must not contain control characters"));
    }
    if value.chars().any(is_bidi_control) {
        return Err(Invalid::field(field, "must not contain bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069)"));
    }
    if value.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(Invalid::field(field, "must contain a visible character"));
    }
    Ok(())
}

/// [`check_text`], for an optional field: absent is fine.
pub fn check_optional_text(field: &'static str, value: Option<&str>, chars_max: usize) -> Result<(), Invalid> {
    value.map_or(Ok(()), |value| check_text(field, value, chars_max))
}

/// A name that is also a path segment (clinic, doctor, business, campaign): a
/// text field that is not `.` or `..` and holds no `/` or `\\`, so that a
/// name sent in a body can always be addressed in a path, and a path (`%2F`
/// decodes to `/`) never reads as another route or a relative reference.
pub fn check_name(field: &'static str, value: &str) -> Result<(), Invalid> {
    check_text(field, value, NAME_CHARS_MAX)?;
    if value == "." || value == ".." || value.contains(['/', '\\']) {
        return Err(Invalid::field(field, "must not be `.` or `..`, nor contain `/` or `\\`"));
    }
    Ok(())
}

/// Characters that reorder the text around them: a name holding one can show
/// as something else (a right-to-left override turns "Asha" into "ahsA").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that take no space of their own: a name made only of them reads as empty.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// A count from 1 to `max`.
pub fn check_count(field: &'static str, value: u32, max: u32) -> Result<(), Invalid> {
    if !(1..=max).contains(&value) {
        return Err(Invalid::field(field, format!("must be 1 to {max}")));
    }
    Ok(())
}

/// `YYYY-MM-DD`, strictly.
pub fn parse_date(field: &'static str, value: &str) -> Result<NaiveDate, Invalid> {
    // Four digits of year, 0001 to 9999: chrono alone takes "0000", "-001" and "+001".
    let four_digit_year = value.len() == 10 && value.as_bytes()[..4].iter().all(u8::is_ascii_digit) && &value[..4] != "0000";
    let date = four_digit_year.then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()).flatten();
    date.ok_or_else(|| Invalid::field(field, format!("{value:?} is not a date (YYYY-MM-DD)")))
}

/// `HH:MM`, strictly, as minutes after midnight.
pub fn parse_minute_of_day(field: &'static str, value: &str) -> Result<u32, Invalid> {
    let time = (value.len() == 5).then(|| NaiveTime::parse_from_str(value, "%H:%M").ok()).flatten();
    let time = time.ok_or_else(|| Invalid::field(field, format!("{value:?} is not a time (HH:MM)")))?;
    Ok(time.hour() * 60 + time.minute())
}

/// A UUID, in any of the forms `Uuid::try_parse` takes.
pub fn parse_uuid(field: &'static str, value: &str) -> Result<Uuid, Invalid> {
    Uuid::try_parse(value).map_err(|_| Invalid::field(field, format!("{value:?} is not a UUID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_visible_and_within_its_length() {
        for good in ["Asha", " Asha ", "a\u{200B}b", &"é".repeat(10)] {
            assert_eq!(check_text("patient", good, 10), Ok(()), "{good:?}");
        }
        for (bad, detail) in [
            ("", "must be 1 to 10 characters"),
            (&"é".repeat(11), "must be 1 to 10 characters"),
            ("As\nha", "must not contain control characters"),
            ("\u{202E}Asha", "must not contain bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069)"),
            (" \u{200B}\u{FEFF}", "must contain a visible character"),
        ] {
            assert_eq!(check_text("patient", bad, 10), Err(Invalid::field("patient", detail)), "{bad:?}");
        }
        assert_eq!(check_optional_text("reason", None, 10), Ok(()));
        assert!(check_optional_text("reason", Some(""), 10).is_err());
    }

    #[test]
    fn names_are_path_segments() {
        for good in ["Dr. Rao", "...", "a.b"] {
            assert_eq!(check_name("doctor", good), Ok(()), "{good:?}");
        }
        for bad in [".", "..", "a/b", "a\\b", ""] {
            assert!(matches!(check_name("doctor", bad), Err(Invalid::Field { field: "doctor", .. })), "{bad:?}");
        }
        assert!(check_name("doctor", &"a".repeat(NAME_CHARS_MAX)).is_ok());
        assert!(check_name("doctor", &"a".repeat(NAME_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn dates_times_counts_and_ids_are_strict() {
        assert_eq!(parse_date("date", "2026-03-02"), Ok(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()));
        for bad in ["0000-01-01", "+001-01-01", "2026-3-02", "2026-02-30", "2026-03-02T00:00"] {
            assert_eq!(parse_date("date", bad), Err(Invalid::field("date", format!("{bad:?} is not a date (YYYY-MM-DD)"))));
        }
        assert_eq!(parse_minute_of_day("first_slot", "09:30"), Ok(570));
        for bad in ["9:30", "24:00", "09:30:00", "0930"] {
            assert!(parse_minute_of_day("first_slot", bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_count("slots_per_day", 1000, SLOTS_PER_DAY_MAX), Ok(()));
        for bad in [0, 1001] {
            assert_eq!(check_count("slots_per_day", bad, SLOTS_PER_DAY_MAX), Err(Invalid::field("slots_per_day", "must be 1 to 1000")));
        }
        assert!(parse_uuid("booking_id", "0190f5a2-7c1e-7b2a-9d3e-4f5a6b7c8d9e").is_ok());
        assert_eq!(parse_uuid("booking_id", "nope"), Err(Invalid::field("booking_id", "\"nope\" is not a UUID")));
    }
}
