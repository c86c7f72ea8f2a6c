//! HDHomeRun device ids: 8 hex digits whose last is a check digit (libhdhomerun's
//! `hdhomerun_discover_validate_device_id`). Pure; validation and the tuner emulation use it.

use sha2::{Digest, Sha256};

const CHECK_TABLE: [u8; 16] = [
    0xA, 0x5, 0xF, 0x6, 0x7, 0xC, 0x1, 0xB, 0x9, 0x2, 0x8, 0xD, 0x4, 0x3, 0xE, 0x0,
];

fn check_digit(first7: &[u8; 7]) -> u8 {
    first7.iter().enumerate().fold(0, |acc, (i, &d)| {
        acc ^ if i % 2 == 0 {
            CHECK_TABLE[d as usize]
        } else {
            d
        }
    })
}

fn hex_digits(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| c.to_digit(16).map(|d| d as u8)).collect()
}

/// Whether `id` is 8 hex digits whose last is the HDHomeRun check digit (libhdhomerun's
/// `hdhomerun_discover_validate_device_id`).
pub fn valid_device_id(id: &str) -> bool {
    match hex_digits(id) {
        Some(d) if d.len() == 8 => {
            let first: [u8; 7] = d[..7].try_into().unwrap_or_default();
            check_digit(&first) == d[7]
        }
        _ => false,
    }
}

/// A valid device id: `seed`'s first seven hex digits completed with the check digit, or
/// (if `seed` does not start with seven hex digits) one derived from a hash of `seed`.
pub fn with_check_digit(seed: &str) -> String {
    let first: [u8; 7] = match seed.get(..7).and_then(hex_digits) {
        Some(d) => d.try_into().unwrap_or_default(),
        None => {
            let h = Sha256::digest(seed.as_bytes());
            std::array::from_fn(|i| (h[i] >> 4) & 0xF)
        }
    };
    let mut out: String = first
        .iter()
        .map(|d| char::from_digit(*d as u32, 16).unwrap_or('0'))
        .collect();
    out.push(char::from_digit(check_digit(&first) as u32, 16).unwrap_or('0'));
    out.to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_follow_libhdhomerun() {
        assert!(valid_device_id("12345674"));
        assert!(valid_device_id("1010C032"));
        assert!(valid_device_id("1010c032"));
        assert!(!valid_device_id("12345678"));
        assert!(!valid_device_id("1234567"));
        assert!(!valid_device_id("1234567G"));
        assert_eq!(with_check_digit("1234567"), "12345674");
        for seed in ["amps:Amps:5000", "x", "zzzzzzzzz", ""] {
            let id = with_check_digit(seed);
            assert!(valid_device_id(&id), "{seed} -> {id}");
        }
    }
}
