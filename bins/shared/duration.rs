//! Duration flags, the same in every binary: digits and a unit, `ms`, `s`, `m` or `h`
//! (`500ms`, `30s`, `5m`, `1h`); a bare number is seconds.

use std::time::Duration;

/// Parses a duration flag (see the module's documentation); the error says what is
/// accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (n, unit) = number_and_unit(text, "a duration such as 500ms, 30s, 5m or 1h")?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Splits a flag such as `500ms` or `4KiB` into its number and its unit (trimmed, maybe
/// empty); the error names `what` was expected.
pub fn number_and_unit<'a>(text: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n = digits
        .parse()
        .map_err(|_| format!("{text:?} is not {what}"))?;
    Ok((n, unit.trim()))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).expect(s);
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        for bad in [
            "",
            "s",
            "1.5s",
            "-1s",
            "10 days",
            "5x",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
