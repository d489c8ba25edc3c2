//! The unified social credit code (统一社会信用代码) of GB 32100-2015 法人和其他组织统一社会信用代码编码规则,
//! which the energy platform uses as `enterpriseCode` (docs/platform.md §1.2, §1.3).
//!
//! Layout of the 18 characters (positions counted from 1, as the standard does):
//!
//! | positions | part | constraint checked here |
//! |---|---|---|
//! | 1 | registration authority (登记管理部门代码) | code character |
//! | 2 | organization type (机构类别代码) | under authorities 1, 5 and 9: a type listed for them |
//! | 3–8 | administrative division of the registering office (GB/T 2260) | digits |
//! | 9–17 | subject identifier (主体标识码, the GB 11714 organization code) | code characters |
//! | 18 | check character | `(31 − Σ cᵢ·3^(i−1) mod 31) mod 31` over positions 1–17 |
//!
//! Code characters are the 31 symbols `0123456789ABCDEFGHJKLMNPQRTUWXY` (digits and the
//! uppercase letters except I, O, Z, S and V), each worth its index in that alphabet.
//!
//! Invariants: a [`Uscc`] always passes every check above. Because 31 is prime and no weight is
//! a multiple of it, every single-character substitution and every swap of two adjacent
//! characters among positions 1–17 changes the check character, so none goes unnoticed.
//!
//! What is deliberately not checked:
//! - Position 1 beyond the alphabet: the 2015 text names authorities 1 (机构编制), 5 (民政), 9
//!   (工商) and Y (其他), and further authorities received codes by later notices; refusing
//!   unknown ones would refuse real codes.
//! - Position 2 for authorities other than 1, 5 and 9, for the same reason.
//! - The GB 11714 check digit inside positions 9–17: the final check character already catches
//!   every single typo, and whether every subject identifier carries a valid one was not
//!   verified; a false refusal would block every upload.
//! - That positions 3–8 name an existing division: the GB/T 2260 table changes every year.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Characters in a unified social credit code.
pub const LENGTH: usize = 18;

/// The code characters, each worth its index.
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Weight of positions 1–17: 3^(i−1) mod 31.
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A registration authority whose organization types GB 32100-2015 lists.
struct Authority {
    code: char,
    name: &'static str,
    types: &'static [(char, &'static str)],
}

/// The authorities whose types the 2015 text constrains.
const AUTHORITIES: &[Authority] = &[
    Authority {
        code: '1',
        name: "机构编制 (establishment administration)",
        types: &[
            ('1', "机关, government organ"),
            ('2', "事业单位, public institution"),
            ('3', "群众团体 under the central establishment office"),
            ('9', "other"),
        ],
    },
    Authority {
        code: '5',
        name: "民政 (civil affairs)",
        types: &[
            ('1', "社会团体, social organization"),
            ('2', "民办非企业单位, private non-enterprise unit"),
            ('3', "基金会, foundation"),
            ('9', "other"),
        ],
    },
    Authority {
        code: '9',
        name: "工商 (market regulation)",
        types: &[
            ('1', "企业, enterprise"),
            ('2', "个体工商户, individual business"),
            ('3', "农民专业合作社, farmers' cooperative"),
        ],
    },
];

/// Why a text is not a unified social credit code; each names the position at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    /// Not 18 characters.
    #[error("{found} characters; a unified social credit code has exactly 18")]
    Length {
        /// How many characters there are.
        found: usize,
    },
    /// A character outside the 31-symbol alphabet.
    #[error("position {position}: {}", character_advice(*.found))]
    Character {
        /// 1-based position.
        position: usize,
        /// The character found.
        found: char,
    },
    /// A letter among positions 3–8, the administrative division code.
    #[error(
        "position {position}: `{found}` must be a digit; positions 3 to 8 are the \
         administrative division code of the registering office (GB/T 2260)"
    )]
    DivisionCode {
        /// 1-based position.
        position: usize,
        /// The character found.
        found: char,
    },
    /// Position 2 is not an organization type of the authority in position 1.
    #[error(
        "position 2: `{found}` is not an organization type of registration authority \
         `{authority}`; use {}",
        type_list(*.authority)
    )]
    OrganizationType {
        /// Position 1.
        authority: char,
        /// Position 2.
        found: char,
    },
    /// The check character disagrees with positions 1–17.
    #[error(
        "position 18: the check character is `{found}`, expected `{expected}` from the first \
         17 characters; one of the 18 is mistyped"
    )]
    CheckCharacter {
        /// Position 18 as written.
        found: char,
        /// What positions 1–17 give.
        expected: char,
    },
}

fn character_advice(found: char) -> String {
    let look_alike = match found {
        'O' | 'o' => Some('0'),
        'I' | 'i' => Some('1'),
        'Z' | 'z' => Some('2'),
        'S' | 's' => Some('5'),
        _ => None,
    };
    let upper = found.to_ascii_uppercase();
    if found.is_ascii_lowercase() && value(upper).is_some() {
        format!("`{found}` is lowercase; write the letters of the code in uppercase (`{upper}`)")
    } else if let Some(digit) = look_alike {
        format!(
            "`{found}` is never used in the code (I, O, Z, S and V are left out); did you mean \
             `{digit}`?"
        )
    } else {
        format!(
            "`{found}` is not a code character; use digits and the uppercase letters other \
             than I, O, Z, S and V"
        )
    }
}

fn type_list(authority: char) -> String {
    AUTHORITIES
        .iter()
        .find(|a| a.code == authority)
        .map(|a| {
            let listed: Vec<String> = a
                .types
                .iter()
                .map(|(t, what)| format!("`{t}` ({what})"))
                .collect();
            format!("{} under {}", listed.join(", "), a.name)
        })
        .unwrap_or_default()
}

/// The worth of a code character, or `None` outside the alphabet.
fn value(c: char) -> Option<u32> {
    let byte = u8::try_from(c).ok()?;
    ALPHABET
        .iter()
        .position(|a| *a == byte)
        .and_then(|i| u32::try_from(i).ok())
}

/// The check character of a code whose first 17 characters are `first17` (more are ignored).
///
/// # Errors
/// [`UsccError::Length`] with fewer than 17 characters, [`UsccError::Character`] for a
/// character outside the alphabet.
pub fn check_character(first17: &str) -> Result<char, UsccError> {
    let chars: Vec<char> = first17.chars().take(WEIGHTS.len()).collect();
    if chars.len() < WEIGHTS.len() {
        return Err(UsccError::Length { found: chars.len() });
    }
    let mut sum = 0;
    for (i, (c, w)) in chars.iter().zip(WEIGHTS).enumerate() {
        let v = value(*c).ok_or(UsccError::Character {
            position: i + 1,
            found: *c,
        })?;
        sum += v * w;
    }
    let index = (31 - sum % 31) % 31;
    Ok(ALPHABET.get(index as usize).map_or('0', |b| char::from(*b)))
}

/// A valid unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Uscc(String);

impl Uscc {
    /// Validates `text` (exactly as written: no trimming, no case folding).
    ///
    /// # Errors
    /// The first problem found, in this order: length, characters, division code,
    /// organization type, check character.
    pub fn parse(text: &str) -> Result<Self, UsccError> {
        let chars: Vec<char> = text.chars().collect();
        if chars.len() != LENGTH {
            return Err(UsccError::Length { found: chars.len() });
        }
        if let Some((i, c)) = chars.iter().enumerate().find(|(_, c)| value(**c).is_none()) {
            return Err(UsccError::Character {
                position: i + 1,
                found: *c,
            });
        }
        if let Some((i, c)) = chars
            .iter()
            .enumerate()
            .take(8)
            .skip(2)
            .find(|(_, c)| !c.is_ascii_digit())
        {
            return Err(UsccError::DivisionCode {
                position: i + 1,
                found: *c,
            });
        }
        let (authority, kind) = (chars[0], chars[1]);
        if let Some(a) = AUTHORITIES.iter().find(|a| a.code == authority)
            && !a.types.iter().any(|(t, _)| *t == kind)
        {
            return Err(UsccError::OrganizationType {
                authority,
                found: kind,
            });
        }
        let expected = check_character(text)?;
        if chars[17] != expected {
            return Err(UsccError::CheckCharacter {
                found: chars[17],
                expected,
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Position 1: the registration authority.
    pub fn registration_authority(&self) -> char {
        self.0.chars().next().unwrap_or('0')
    }

    /// Position 2: the organization type.
    pub fn organization_type(&self) -> char {
        self.0.chars().nth(1).unwrap_or('0')
    }

    /// Positions 3–8: the administrative division of the registering office.
    pub fn division_code(&self) -> &str {
        self.0.get(2..8).unwrap_or_default()
    }

    /// Positions 9–17: the subject identifier (organization code).
    pub fn subject_code(&self) -> &str {
        self.0.get(8..17).unwrap_or_default()
    }
}

impl FromStr for Uscc {
    type Err = UsccError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes a 17-character body with its check character.
    fn code(body: &str) -> String {
        format!("{body}{}", check_character(body).unwrap())
    }

    /// Real-format codes: one per constrained authority and type, one of an authority the
    /// 2015 text does not constrain, and letters in the subject identifier.
    fn valid_codes() -> Vec<String> {
        [
            "91420100MA4K2N7Q8", // enterprise, Wuhan, a post-2015 "MA" subject identifier
            "92420106MA4L0T3XX", // individual business
            "93420116MA4KRW5J1", // farmers' cooperative
            "11420000011043817", // government organ
            "12420000441351062", // public institution
            "51420000MJH123456", // social organization
            "531000005000100AB", // foundation, national level
            "Y1420100MB1234567", // "other" authority
            "31420000E00017891", // an authority given its code after 2015
        ]
        .iter()
        .map(|body| code(body))
        .collect()
    }

    #[test]
    fn weights_are_powers_of_three_mod_31() {
        let mut w = 1;
        for weight in WEIGHTS {
            assert_eq!(weight, w);
            w = w * 3 % 31;
        }
        assert_eq!(ALPHABET.len(), 31);
        for banned in [b'I', b'O', b'Z', b'S', b'V'] {
            assert!(!ALPHABET.contains(&banned));
        }
    }

    #[test]
    fn the_example_of_the_standard_checks_out() {
        // The worked example printed with GB 32100-2015.
        assert_eq!(check_character("91350100M000100Y4"), Ok('3'));
        let parsed = Uscc::parse("91350100M000100Y43").unwrap();
        assert_eq!(parsed.registration_authority(), '9');
        assert_eq!(parsed.organization_type(), '1');
        assert_eq!(parsed.division_code(), "350100");
        assert_eq!(parsed.subject_code(), "M000100Y4");
        assert_eq!(parsed.to_string(), "91350100M000100Y43");
        assert_eq!("91350100M000100Y43".parse::<Uscc>(), Ok(parsed));
    }

    #[test]
    fn constructed_codes_are_valid() {
        for c in valid_codes() {
            assert_eq!(
                Uscc::parse(&c).map(|u| u.as_str().to_owned()),
                Ok(c.clone())
            );
        }
    }

    #[test]
    fn every_single_character_substitution_is_caught() {
        let mut caught = 0;
        for c in valid_codes() {
            let chars: Vec<char> = c.chars().collect();
            for position in 0..LENGTH {
                let replacements = ALPHABET
                    .iter()
                    .map(|b| char::from(*b))
                    .chain("IOZSVaio -".chars());
                for r in replacements.filter(|r| *r != chars[position]) {
                    let mut corrupted = chars.clone();
                    corrupted[position] = r;
                    let text: String = corrupted.iter().collect();
                    assert!(Uscc::parse(&text).is_err(), "{c} → {text} accepted");
                    caught += 1;
                }
            }
        }
        assert_eq!(caught, valid_codes().len() * LENGTH * (30 + 10));
    }

    #[test]
    fn every_adjacent_swap_in_the_body_is_caught() {
        for c in valid_codes() {
            let chars: Vec<char> = c.chars().collect();
            for i in 0..16 {
                if chars[i] == chars[i + 1] {
                    continue;
                }
                let mut swapped = chars.clone();
                swapped.swap(i, i + 1);
                let text: String = swapped.iter().collect();
                assert!(Uscc::parse(&text).is_err(), "{c} → {text} accepted");
            }
        }
    }

    #[test]
    fn a_wrong_check_character_names_the_expected_one() {
        let err = Uscc::parse("91350100M000100Y44").unwrap_err();
        assert_eq!(
            err,
            UsccError::CheckCharacter {
                found: '4',
                expected: '3'
            }
        );
        let shown = err.to_string();
        assert!(shown.starts_with("position 18:"), "{shown}");
        assert!(shown.contains("expected `3`"), "{shown}");
    }

    #[test]
    fn a_wrong_length_says_how_long_it_is() {
        let err = Uscc::parse("91350100M000100Y4").unwrap_err();
        assert_eq!(err, UsccError::Length { found: 17 });
        assert!(err.to_string().contains("exactly 18"), "{err}");
        assert_eq!(
            Uscc::parse(" 91350100M000100Y43"),
            Err(UsccError::Length { found: 19 })
        );
        // Characters, not bytes: a full-width letter is one character too many, not three.
        assert_eq!(
            Uscc::parse("91350100M000100Y4３"),
            Err(UsccError::Character {
                position: 18,
                found: '３'
            })
        );
    }

    #[test]
    fn a_bad_character_is_named_with_its_position_and_a_fix() {
        let lower = Uscc::parse("91350100m000100Y43").unwrap_err();
        assert_eq!(
            lower,
            UsccError::Character {
                position: 9,
                found: 'm'
            }
        );
        assert!(lower.to_string().contains("uppercase (`M`)"), "{lower}");
        let letter_o = Uscc::parse("91350100M0O0100Y43").unwrap_err();
        assert!(
            letter_o.to_string().starts_with("position 11:"),
            "{letter_o}"
        );
        assert!(
            letter_o.to_string().contains("did you mean `0`"),
            "{letter_o}"
        );
        let dash = Uscc::parse("91350100-000100Y43").unwrap_err();
        assert!(dash.to_string().contains("not a code character"), "{dash}");
    }

    #[test]
    fn a_letter_in_the_division_code_is_refused() {
        let body = "913501A0M000100Y4";
        let err = Uscc::parse(&code(body)).unwrap_err();
        assert_eq!(
            err,
            UsccError::DivisionCode {
                position: 7,
                found: 'A'
            }
        );
        assert!(err.to_string().contains("GB/T 2260"), "{err}");
    }

    #[test]
    fn an_organization_type_the_standard_does_not_list_is_refused() {
        for body in [
            "94350100M000100Y4",
            "14350100M000100Y4",
            "59350100M000100Y4",
        ] {
            let c = code(body);
            if body.starts_with("59") {
                // `9` is "other" under civil affairs.
                assert!(Uscc::parse(&c).is_ok(), "{c}");
                continue;
            }
            let err = Uscc::parse(&c).unwrap_err();
            assert!(
                matches!(err, UsccError::OrganizationType { .. }),
                "{c}: {err}"
            );
            assert!(err.to_string().starts_with("position 2:"), "{err}");
        }
        let err = Uscc::parse(&code("94350100M000100Y4")).unwrap_err();
        assert!(err.to_string().contains("`1` (企业, enterprise)"), "{err}");
    }

    #[test]
    fn the_code_serializes_as_its_text() {
        let c = Uscc::parse("91350100M000100Y43").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"91350100M000100Y43\"");
    }
}
