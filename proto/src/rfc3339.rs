//! Times as RFC 3339 text in UTC with milliseconds (`2026-12-01T17:20:00.123Z`), the form
//! of `event_time`.

/// Days from 1970-01-01 to the civil date (proleptic Gregorian) of day `days`.
fn civil(days: i64) -> (i64, u32, u32) {
    // Eras of 400 years from 0000-03-01, so that the leap day ends each year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `t` (epoch seconds) in UTC, to the millisecond below (after rounding to the
/// microsecond, so that 0.999 is not read as 0.998999...); times before 1970 are written
/// as 1970-01-01T00:00:00.000Z.
pub fn format_millis(t: f64) -> String {
    let ms = if t.is_finite() && t > 0.0 {
        ((t * 1e6).round() as i64).div_euclid(1000)
    } else {
        0
    };
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_millis(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1733071200.123456), "2024-12-01T16:40:00.123Z");
        assert_eq!(format_millis(951782400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(format_millis(1798761600.0), "2027-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1798761599.999), "2026-12-31T23:59:59.999Z");
        assert_eq!(format_millis(1796145600.123), "2026-12-01T17:20:00.123Z");
        assert_eq!(format_millis(4107542400.0), "2100-03-01T00:00:00.000Z");
        assert_eq!(format_millis(253402300799.5), "9999-12-31T23:59:59.500Z");
        assert_eq!(format_millis(-3.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(f64::NAN), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        let mut last = civil(-1);
        for day in 0..200_000 {
            let (y, m, d) = civil(day);
            let next_day = (y, m, last.2 + 1) == (y, m, d) && (last.0, last.1) == (y, m);
            let next_month =
                d == 1 && (m == last.1 + 1 && y == last.0 || m == 1 && y == last.0 + 1);
            assert!(next_day || next_month, "{last:?} then {:?}", (y, m, d));
            last = (y, m, d);
        }
    }
}
