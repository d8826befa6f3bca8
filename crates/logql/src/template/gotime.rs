//! Go's `time.Time` as templates see it: an instant with a location, printed and parsed with
//! Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`), for `date`, `toDate`,
//! `toDateInZone`, `unixToTime`, `__timestamp__` and printing a time value.
//!
//! Zones come from the system tz database through `jiff` (DST rules included); the server's
//! "Local" zone, which Loki's `toDate`, `date`, `now` and `unixToTime` use, is UTC here so
//! that results do not depend on the host.

use jiff::tz::TimeZone;
use model::civil::{civil_from_days as civil, days_from_civil};

/// A time's location: Go's `time.Location`.
#[derive(Clone, Debug)]
pub enum Zone {
    Utc,
    /// A fixed offset (seconds east of UTC) and its name (`""`: printed as `+0100`).
    Fixed(i32, String),
    /// An IANA zone such as `America/New_York`.
    Named(TimeZone),
}

impl Zone {
    /// Go's `time.LoadLocation`: `""` and `UTC` are UTC, `Local` is the server's zone (UTC),
    /// anything else an IANA name.
    pub fn load(name: &str) -> Option<Zone> {
        match name {
            "" | "UTC" | "Local" => Some(Zone::Utc),
            _ => TimeZone::get(name).ok().map(Zone::Named),
        }
    }

    /// The offset (seconds east of UTC) and abbreviation in effect at `secs`.
    fn at(&self, secs: i64) -> (i32, String) {
        match self {
            Zone::Utc => (0, "UTC".into()),
            Zone::Fixed(off, name) => (*off, name.clone()),
            Zone::Named(tz) => match jiff::Timestamp::from_second(secs) {
                Ok(ts) => {
                    let info = tz.to_offset_info(ts);
                    (info.offset().seconds(), info.abbreviation().to_string())
                }
                Err(_) => (0, "UTC".into()),
            },
        }
    }

    /// The instant of a wall-clock time (seconds as if it were UTC) in this zone, as Go's
    /// `time.Date` finds it: the offset in effect at the wall time read as UTC, corrected
    /// once if the instant it gives falls under another offset. A time skipped by a DST
    /// change (02:30 on a spring-forward day in New York) thus lands an hour earlier
    /// (01:30 EST), a repeated one on its first occurrence.
    fn resolve(&self, wall_secs: i64) -> i64 {
        let (first, _) = self.at(wall_secs);
        if first == 0 {
            return wall_secs;
        }
        let utc = wall_secs - i64::from(first);
        let (then, _) = self.at(utc);
        wall_secs - i64::from(then)
    }
}

/// Go's `time.Time`.
#[derive(Clone, Debug)]
pub struct Time {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    pub nanos: u32,
    pub zone: Zone,
}

impl PartialEq for Time {
    fn eq(&self, o: &Time) -> bool {
        self.secs == o.secs && self.nanos == o.nanos
    }
}

/// Go's zero `time.Time` (January 1, year 1, UTC): what a failed `toDate` gives.
const ZERO_SECS: i64 = -62_135_596_800;

impl Time {
    pub fn from_nanos(ns: i64) -> Time {
        Time {
            secs: ns.div_euclid(1_000_000_000),
            nanos: ns.rem_euclid(1_000_000_000) as u32,
            zone: Zone::Utc,
        }
    }
    pub fn zero() -> Time {
        Time {
            secs: ZERO_SECS,
            nanos: 0,
            zone: Zone::Utc,
        }
    }
    /// Nanoseconds since the epoch (Go's `UnixNano`, which wraps outside 1678…2262).
    pub fn unix_nanos(&self) -> i64 {
        self.secs
            .wrapping_mul(1_000_000_000)
            .wrapping_add(i64::from(self.nanos))
    }
    pub fn in_utc(&self) -> Time {
        Time {
            zone: Zone::Utc,
            ..self.clone()
        }
    }
    /// Go's `Time.String`: `2006-01-02 15:04:05.999999999 -0700 MST`.
    pub fn go_string(&self) -> String {
        format_time(self, "2006-01-02 15:04:05.999999999 -0700 MST")
    }
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

/// A fractional-second element at the start of a layout (`.000`, `,999`…): its digit
/// count, whether trailing zeros are dropped (`9`), and its length in the layout.
fn frac_elem(l: &str) -> Option<(usize, bool, usize)> {
    let b = l.as_bytes();
    if !matches!(b.first(), Some(b'.' | b',')) {
        return None;
    }
    let ch = *b.get(1).filter(|c| matches!(c, b'0' | b'9'))?;
    let n = b[1..].iter().take_while(|c| **c == ch).count();
    if b.get(1 + n).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some((n, ch == b'9', 1 + n))
}

/// `+hh`, `+hhmm` or `+hh:mm` (Go's `-07`, `-0700`, `-07:00`).
fn fmt_offset(off: i32, minutes: bool, colon: bool) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.unsigned_abs();
    let (h, m) = (a / 3600, (a / 60) % 60);
    match (minutes, colon) {
        (false, _) => format!("{sign}{h:02}"),
        (true, false) => format!("{sign}{h:02}{m:02}"),
        (true, true) => format!("{sign}{h:02}:{m:02}"),
    }
}

/// Formats `t` in its own zone with a Go layout.
pub fn format_time(t: &Time, layout: &str) -> String {
    let (off, abbr) = t.zone.at(t.secs);
    let local = t.secs + i64::from(off);
    let frac = t.nanos;
    let days = local.div_euclid(86_400);
    let sod = local.rem_euclid(86_400);
    let (y, mo, d) = civil(days);
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let wd = DAYS[days.rem_euclid(7) as usize];
    let abbr = if abbr.is_empty() {
        fmt_offset(off, true, false)
    } else {
        abbr
    };
    let z = |minutes, colon| {
        if off == 0 {
            "Z".to_string()
        } else {
            fmt_offset(off, minutes, colon)
        }
    };
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    let mut out = String::new();
    let mut rest = layout;
    let table: &[(&str, &dyn Fn() -> String)] = &[
        ("2006", &|| format!("{y:04}")),
        ("January", &|| MONTHS[mo as usize - 1].to_string()),
        ("Jan", &|| MONTHS[mo as usize - 1][..3].to_string()),
        ("Monday", &|| wd.to_string()),
        ("Mon", &|| wd[..3].to_string()),
        ("MST", &|| abbr.clone()),
        ("Z07:00", &|| z(true, true)),
        ("Z0700", &|| z(true, false)),
        ("Z07", &|| z(false, false)),
        ("-07:00", &|| fmt_offset(off, true, true)),
        ("-0700", &|| fmt_offset(off, true, false)),
        ("-07", &|| fmt_offset(off, false, false)),
        ("002", &|| {
            format!("{:03}", days - days_from_civil(y, 1, 1) + 1)
        }),
        ("01", &|| format!("{mo:02}")),
        ("02", &|| format!("{d:02}")),
        ("_2", &|| format!("{d:>2}")),
        ("15", &|| format!("{h:02}")),
        ("03", &|| format!("{h12:02}")),
        ("04", &|| format!("{mi:02}")),
        ("05", &|| format!("{s:02}")),
        ("06", &|| format!("{:02}", y.rem_euclid(100))),
        ("PM", &|| if h >= 12 { "PM".into() } else { "AM".into() }),
        ("pm", &|| if h >= 12 { "pm".into() } else { "am".into() }),
        ("1", &|| mo.to_string()),
        ("2", &|| d.to_string()),
        ("3", &|| h12.to_string()),
        ("4", &|| mi.to_string()),
        ("5", &|| s.to_string()),
    ];
    'outer: while !rest.is_empty() {
        if let Some((n, trim, len)) = frac_elem(rest) {
            let digits = format!("{frac:09}");
            let mut digits = &digits[..n.min(9)];
            if trim {
                digits = digits.trim_end_matches('0');
            }
            if !digits.is_empty() {
                out.push_str(&rest[..1]);
                out.push_str(digits);
            }
            rest = &rest[len..];
            continue;
        }
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

/// What a parsed value said about its zone.
enum ParsedZone {
    None,
    Utc,
    Offset(i32),
    Abbrev(String),
}

/// Go's `time.ParseInLocation`: parses `value` with a Go layout; without a zone in the
/// value the wall time is read in `loc`. `None` if the value does not fit the layout.
pub fn parse_time(layout: &str, value: &str, loc: &Zone) -> Option<Time> {
    let (mut y, mut mo, mut d) = (1i64, 1u32, 1u32);
    let (mut h, mut mi, mut s, mut frac) = (0i64, 0i64, 0i64, 0u32);
    let mut pm: Option<bool> = None;
    let mut zone = ParsedZone::None;
    let mut l = layout;
    let mut v = value;
    /// Up to `max` digits, at least `min`.
    fn num(v: &mut &str, min: usize, max: usize) -> Option<i64> {
        let k = v.bytes().take(max).take_while(u8::is_ascii_digit).count();
        if k < min {
            return None;
        }
        let r = v[..k].parse().ok();
        *v = &v[k..];
        r
    }
    fn fraction(v: &mut &str) -> Option<u32> {
        let k = v.bytes().take_while(u8::is_ascii_digit).count();
        let digits = format!("{:0<9}", &v[..k]);
        *v = &v[k..];
        digits[..9].parse().ok()
    }
    fn offset(v: &mut &str, minutes: bool, colon: bool) -> Option<i32> {
        let sign = match v.as_bytes().first()? {
            b'-' => -1,
            b'+' => 1,
            _ => return None,
        };
        *v = &v[1..];
        let oh = num(v, 2, 2)?;
        let mut om = 0;
        if minutes {
            if colon {
                *v = v.strip_prefix(':')?;
            }
            om = num(v, 2, 2)?;
        }
        Some(sign * (oh * 3600 + om * 60) as i32)
    }
    fn name(v: &mut &str, names: &[&str], short: bool) -> Option<usize> {
        for (i, n) in names.iter().enumerate() {
            let n = if short { &n[..3] } else { n };
            if v.len() >= n.len() && v[..n.len()].eq_ignore_ascii_case(n) {
                *v = &v[n.len()..];
                return Some(i);
            }
        }
        None
    }
    while !l.is_empty() {
        if let Some((n, trim, len)) = frac_elem(l) {
            // `.999` makes the fraction optional; `.000` needs exactly n digits
            match v.strip_prefix(['.', ',']) {
                Some(rv) if rv.starts_with(|c: char| c.is_ascii_digit()) => {
                    let k = rv.bytes().take_while(u8::is_ascii_digit).count();
                    if !trim && k != n {
                        return None;
                    }
                    v = rv;
                    frac = fraction(&mut v)?;
                }
                _ if trim => {}
                _ => return None,
            }
            l = &l[len..];
            continue;
        }
        let (pat, r) = [
            "2006", "January", "Jan", "Monday", "Mon", "MST", "Z07:00", "Z0700", "Z07", "-07:00",
            "-0700", "-07", "01", "02", "_2", "15", "03", "04", "05", "06", "PM", "pm", "1", "2",
            "3", "4", "5",
        ]
        .iter()
        .find_map(|p| l.strip_prefix(p).map(|r| (*p, r)))
        .unwrap_or(("", l));
        match pat {
            "2006" => y = num(&mut v, 4, 4)?,
            "06" => {
                let yy = num(&mut v, 2, 2)?;
                y = if yy >= 69 { 1900 + yy } else { 2000 + yy };
            }
            "January" => mo = name(&mut v, &MONTHS, false)? as u32 + 1,
            "Jan" => mo = name(&mut v, &MONTHS, true)? as u32 + 1,
            "Monday" => {
                name(&mut v, &DAYS, false)?;
            }
            "Mon" => {
                name(&mut v, &DAYS, true)?;
            }
            "MST" => {
                let k = v.bytes().take_while(u8::is_ascii_alphabetic).count();
                if k < 3 {
                    return None;
                }
                zone = ParsedZone::Abbrev(v[..k].to_string());
                v = &v[k..];
            }
            "Z07:00" | "Z0700" | "Z07" => match v.strip_prefix('Z') {
                Some(rv) => {
                    v = rv;
                    zone = ParsedZone::Utc;
                }
                None => zone = ParsedZone::Offset(offset(&mut v, pat != "Z07", pat == "Z07:00")?),
            },
            "-07:00" | "-0700" | "-07" => {
                zone = ParsedZone::Offset(offset(&mut v, pat != "-07", pat == "-07:00")?);
            }
            "01" => mo = num(&mut v, 2, 2)? as u32,
            "1" => mo = num(&mut v, 1, 2)? as u32,
            "02" => d = num(&mut v, 2, 2)? as u32,
            "2" => d = num(&mut v, 1, 2)? as u32,
            "_2" => {
                v = v.strip_prefix(' ').unwrap_or(v);
                d = num(&mut v, 1, 2)? as u32;
            }
            "15" => h = num(&mut v, 1, 2)?,
            "03" => h = num(&mut v, 2, 2)?,
            "3" => h = num(&mut v, 1, 2)?,
            "04" => mi = num(&mut v, 2, 2)?,
            "4" => mi = num(&mut v, 1, 2)?,
            "05" | "5" => {
                s = num(&mut v, if pat == "05" { 2 } else { 1 }, 2)?;
                // Go accepts a fraction after seconds even when the layout has none
                if frac_elem(r).is_none()
                    && let Some(rv) = v.strip_prefix('.')
                    && rv.starts_with(|c: char| c.is_ascii_digit())
                {
                    v = rv;
                    frac = fraction(&mut v)?;
                }
            }
            "PM" | "pm" => {
                let k = v.get(..2)?;
                pm = Some(match k.to_ascii_uppercase().as_str() {
                    "PM" => true,
                    "AM" => false,
                    _ => return None,
                });
                v = &v[2..];
            }
            _ => {
                let c = l.chars().next()?;
                let cv = v.chars().next()?;
                if c != cv {
                    return None;
                }
                v = &v[cv.len_utf8()..];
                l = &l[c.len_utf8()..];
                continue;
            }
        }
        l = r;
    }
    if !v.is_empty() {
        return None;
    }
    match pm {
        Some(true) if h < 12 => h += 12,
        Some(false) if h == 12 => h = 0,
        _ => {}
    }
    let days_in_month = match mo {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let wall = days_from_civil(y, mo, d)
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + s)?;
    let (secs, zone) = match zone {
        ParsedZone::None => (loc.resolve(wall), loc.clone()),
        ParsedZone::Utc => (wall, Zone::Utc),
        ParsedZone::Offset(off) => {
            let secs = wall - i64::from(off);
            // the location when its offset then is the one given, else a nameless fixed zone
            if loc.at(secs).0 == off {
                (secs, loc.clone())
            } else {
                (secs, Zone::Fixed(off, String::new()))
            }
        }
        ParsedZone::Abbrev(a) => {
            // an abbreviation the location uses around that time (EST/EDT for New York)
            let known = [wall - 43_200, wall + 43_200]
                .into_iter()
                .find_map(|probe| {
                    let (off, name) = loc.at(probe);
                    let secs = wall - i64::from(off);
                    (name == a && loc.at(secs).1 == a).then_some(secs)
                });
            match known {
                Some(secs) => (secs, loc.clone()),
                None if a == "UTC" => (wall, Zone::Utc),
                None => {
                    // Go: an unknown abbreviation is a zone of offset 0 (GMT+h: h hours)
                    let off = a
                        .strip_prefix("GMT")
                        .and_then(|h| h.parse::<i32>().ok())
                        .map_or(0, |h| h * 3600);
                    (wall - i64::from(off), Zone::Fixed(off, a))
                }
            }
        }
    };
    Some(Time {
        secs,
        nanos: frac,
        zone,
    })
}
