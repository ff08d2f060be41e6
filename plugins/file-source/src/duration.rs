//! Go-style duration strings ("10s", "1m30s", "500ms", "1.5s", "2h"), the
//! syntax Consul's service definitions use, converted to the whole
//! milliseconds the WIT `check-definition` carries.

use go_duration::DurationError;

/// Parses `text` as a Go duration and returns it in milliseconds (see
/// `go_duration::parse_ms`). The error is the complete message, e.g.
/// `"ten" is not a duration`.
pub fn parse_ms(text: &str) -> Result<u32, String> {
    go_duration::parse_ms(text).map_err(|e| match e {
        DurationError::NotADuration | DurationError::MissingUnit => {
            format!("{text:?} is not a duration (use e.g. \"10s\", \"1m30s\", \"500ms\")")
        }
        DurationError::TooLong => too_long(text),
    })
}

fn too_long(text: &str) -> String {
    format!(
        "{text:?} is too long (at most {}ms, about 49 days)",
        u32::MAX
    )
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn go_style_durations() {
        assert_eq!(parse_ms("10s"), Ok(10_000));
        assert_eq!(parse_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("1.5s"), Ok(1_500));
        assert_eq!(parse_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_ms("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(parse_ms(".5s"), Ok(500));
        assert_eq!(parse_ms("5.s"), Ok(5_000));
        assert_eq!(parse_ms("0"), Ok(0));
        assert_eq!(parse_ms("0s"), Ok(0));
        assert_eq!(parse_ms("1.0000000000000000000000001s"), Ok(1_000));
    }

    #[test]
    fn sub_millisecond_rounds_up() {
        assert_eq!(parse_ms("500us"), Ok(1));
        assert_eq!(parse_ms("1500\u{b5}s"), Ok(2));
        assert_eq!(parse_ms("1ns"), Ok(1));
        assert_eq!(parse_ms("2000000ns"), Ok(2));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "", "ten", "10", "s", "10x", "10 s", " 10s", "-5s", "+5s", ".s", "1..5s", "5sm",
        ] {
            let err = parse_ms(bad).expect_err(bad);
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_what_does_not_fit() {
        assert_eq!(parse_ms("1193h"), Ok(4_294_800_000));
        let err = parse_ms("1194h").expect_err("too long");
        assert!(err.contains("too long"), "{err}");
        let err = parse_ms("99999999999999999999999999999999999999999h").expect_err("too long");
        assert!(err.contains("too long"), "{err}");
    }
}
