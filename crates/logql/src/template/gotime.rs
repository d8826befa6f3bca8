//! Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`): formatting and parsing times for
//! `date`, `toDate`, `toDateInZone` and printing a time value.

/// Days since 1970-01-01 to (y, m, d) (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

/// Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`), UTC only.
pub fn format_time(ns: i64, layout: &str) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil(days);
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let wd = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut rest = layout;
    let table: &[(&str, &dyn Fn() -> String)] = &[
        ("2006", &|| format!("{y:04}")),
        ("January", &|| MONTHS[mo as usize - 1].to_string()),
        ("Jan", &|| MONTHS[mo as usize - 1][..3].to_string()),
        ("Monday", &|| wd.to_string()),
        ("Mon", &|| wd[..3].to_string()),
        ("MST", &|| "UTC".to_string()),
        ("Z07:00", &|| "Z".to_string()),
        ("-0700", &|| "+0000".to_string()),
        ("-07:00", &|| "+00:00".to_string()),
        (".000000000", &|| format!(".{frac:09}")),
        (".999999999", &|| {
            if frac == 0 {
                String::new()
            } else {
                format!(".{frac:09}").trim_end_matches('0').to_string()
            }
        }),
        (".000000", &|| format!(".{:06}", frac / 1000)),
        (".000", &|| format!(".{:03}", frac / 1_000_000)),
        ("01", &|| format!("{mo:02}")),
        ("02", &|| format!("{d:02}")),
        ("15", &|| format!("{h:02}")),
        ("03", &|| {
            format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })
        }),
        ("04", &|| format!("{mi:02}")),
        ("05", &|| format!("{s:02}")),
        ("06", &|| format!("{:02}", y % 100)),
        ("PM", &|| if h >= 12 { "PM".into() } else { "AM".into() }),
        ("pm", &|| if h >= 12 { "pm".into() } else { "am".into() }),
        ("1", &|| mo.to_string()),
        ("2", &|| d.to_string()),
        ("3", &|| (if h % 12 == 0 { 12 } else { h % 12 }).to_string()),
        ("4", &|| mi.to_string()),
        ("5", &|| s.to_string()),
    ];
    'outer: while !rest.is_empty() {
        for (pat, f) in table {
            if let Some(r) = rest.strip_prefix(pat) {
                out.push_str(&f());
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Parses `value` with a Go layout (numeric fields, `Z`/offset zones); `None` if it does
/// not fit.
pub fn parse_time(layout: &str, value: &str) -> Option<i64> {
    let (mut y, mut mo, mut d) = (1i64, 1u32, 1u32);
    let (mut h, mut mi, mut s, mut frac, mut off) = (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut l = layout;
    let mut v = value;
    fn num(v: &mut &str, n: usize) -> Option<i64> {
        let k = v.bytes().take(n).take_while(u8::is_ascii_digit).count();
        if k == 0 {
            return None;
        }
        let r = v[..k].parse().ok();
        *v = &v[k..];
        r
    }
    fn fraction(v: &mut &str) -> Option<i64> {
        let k = v.bytes().take_while(u8::is_ascii_digit).count();
        let digits = format!("{:0<9}", &v[..k]);
        *v = &v[k..];
        digits[..9].parse().ok()
    }
    fn zone(v: &mut &str, colon: bool) -> Option<i64> {
        let sign = match v.as_bytes().first()? {
            b'-' => -1,
            b'+' => 1,
            _ => return None,
        };
        *v = &v[1..];
        let oh = num(v, 2)?;
        if colon {
            *v = v.strip_prefix(':')?;
        }
        let om = num(v, 2)?;
        Some(sign * (oh * 3600 + om * 60))
    }
    while !l.is_empty() {
        if let Some(r) = l.strip_prefix("2006") {
            y = num(&mut v, 4)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("Z07:00") {
            match v.strip_prefix('Z') {
                Some(rv) => v = rv,
                None => off = zone(&mut v, true)?,
            }
            l = r;
        } else if let Some(r) = l.strip_prefix("-07:00") {
            off = zone(&mut v, true)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("-0700") {
            off = zone(&mut v, false)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("01") {
            mo = num(&mut v, 2)? as u32;
            l = r;
        } else if let Some(r) = l.strip_prefix("02") {
            d = num(&mut v, 2)? as u32;
            l = r;
        } else if let Some(r) = l.strip_prefix("15") {
            h = num(&mut v, 2)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("04") {
            mi = num(&mut v, 2)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("05") {
            s = num(&mut v, 2)?;
            l = r;
            // Go accepts a fraction after seconds even when the layout has none
            if !l.starts_with('.')
                && let Some(rv) = v.strip_prefix('.')
            {
                v = rv;
                frac = fraction(&mut v)?;
            }
        } else if let Some(r) = l.strip_prefix(".000") {
            v = v.strip_prefix('.')?;
            frac = fraction(&mut v)?;
            l = r.trim_start_matches('0');
        } else {
            let c = l.chars().next()?;
            let cv = v.chars().next()?;
            if c != cv {
                return None;
            }
            l = &l[c.len_utf8()..];
            v = &v[cv.len_utf8()..];
        }
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + s - off)?;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}
