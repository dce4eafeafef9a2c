//! Linux CPU-list strings (`0-3,8,10-11`), as sysfs prints them.

use crate::TopologyError;

/// Formats sorted, de-duplicated CPU ids the way sysfs `cpulist` files do.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Parses a sysfs-style CPU list (`0-3,8`) into sorted ids; an empty string is no CPUs.
pub fn parse_cpu_list(input: &str) -> Result<Vec<u32>, TopologyError> {
    let bad = || TopologyError::BadCpuList {
        input: input.to_string(),
    };
    let mut cpus = Vec::new();
    for part in input.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.trim().parse().map_err(|_| bad())?;
                let b: u32 = b.trim().parse().map_err(|_| bad())?;
                if b < a || b - a > crate::MAX_CPUS {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_ranges_and_singles() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[5]), "5");
        assert_eq!(format_cpu_list(&[3, 1, 2, 2]), "1-3");
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn parses_what_it_formats() {
        let cpus = vec![0, 2, 3, 4, 9, 15, 16];
        assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)), Ok(cpus));
        assert_eq!(parse_cpu_list("0-1\n"), Ok(vec![0, 1]));
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_cpu_list("a-3").is_err());
        assert!(parse_cpu_list("4-2").is_err());
        assert!(parse_cpu_list("1,,x").is_err());
    }
}
