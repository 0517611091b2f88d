//! Memory sizes and durations as written in `limits`.

use std::time::Duration;

/// Parse a memory size: an integer followed by a unit, `B`, `KB`, `MB`,
/// `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024). Zero is refused.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!("`{text}` is not a memory size"));
    }
    let multiplier: u64 = match unit {
        "B" => 1,
        "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "" => return Err(format!("memory size `{text}` has no unit")),
        _ => return Err(format!("`{unit}` in `{text}` is not a memory unit")),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("memory size `{text}` is too large"))?;
    let bytes = n
        .checked_mul(multiplier)
        .ok_or_else(|| format!("memory size `{text}` is too large"))?;
    if bytes == 0 {
        return Err("memory limit must be greater than zero".to_string());
    }
    Ok(bytes)
}

/// Parse a duration: one or more integers each followed by a unit, `ms`,
/// `s`, `m`, `h` or `d`, e.g. `30s`, `10m`, `1h30m`. Zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86400).map(Duration::from_secs),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(bad)?;
    }
    if total.is_zero() {
        return Err("timeout must be greater than zero".to_string());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("512MiB"), Ok(512 << 20));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_memory("10B"), Ok(10));
        for bad in [
            "lots",
            "",
            "2",
            "2gb",
            "1.5GiB",
            "-1GiB",
            "0MiB",
            "99999999999999TiB",
            "GiB",
        ] {
            assert!(parse_memory(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        for bad in [
            "-1s",
            "",
            "10",
            "s",
            "1x",
            "1 h",
            "0s",
            "1.5h",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }
}
