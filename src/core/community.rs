//! Communities (incident 03): the community, its owner's admin membership and
//! its subscription are one event; slugs are allocated here, in the writer,
//! so two creations can never both see a slug as free.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::state::TenantState;
use super::{EventKind, Rejection, Text};

pub const SLUG_CHARS_MAX: usize = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Community {
    pub community_id: Uuid,
    pub slug: Text,
    pub name: Text,
    /// The owner, also the first member, with the admin role.
    pub owner: Text,
    pub plan: Text,
    pub created_at: DateTime<Utc>,
    pub position: u64,
}

/// The name transliterated to ASCII, lowercased, every run of other characters
/// turned into one `-`, trimmed of `-`, cut to 60 characters.
pub fn base_slug(name: &str) -> String {
    let ascii = deunicode::deunicode(name).to_ascii_lowercase();
    let mut slug = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(SLUG_CHARS_MAX);
    slug.trim_end_matches('-').to_owned()
}

pub(super) fn decide_create(
    tenant: Option<&TenantState>,
    community_id: Uuid,
    name: &Text,
    owner: &Text,
    plan: &Text,
) -> Result<Vec<EventKind>, Rejection> {
    let base = base_slug(name);
    if base.is_empty() {
        return Err(Rejection::InvalidName { name: name.clone() });
    }
    let taken = |slug: &str| tenant.is_some_and(|t| t.communities.contains_key(slug));
    let slug = if taken(&base) {
        // Slugs are never freed, so every suffix below the last one given for
        // this base is taken: start the search there.
        let mut suffix = tenant.and_then(|t| t.slug_suffixes.get(base.as_str())).copied().unwrap_or(0) + 1;
        while taken(&format!("{base}-{suffix}")) {
            suffix += 1;
        }
        format!("{base}-{suffix}")
    } else {
        base
    };
    Ok(vec![EventKind::CommunityCreated { community_id, slug: slug.into(), name: name.clone(), owner: owner.clone(), plan: plan.clone() }])
}

pub(super) fn apply(tenant: &mut TenantState, kind: &EventKind, at: DateTime<Utc>, position: u64) {
    let EventKind::CommunityCreated { community_id, slug, name, owner, plan } = kind else { unreachable!("not a community event") };
    if let Some((base, suffix)) = slug.rsplit_once('-')
        && let Ok(suffix) = suffix.parse::<u32>()
        && base_slug(name) == base
    {
        let last = tenant.slug_suffixes.entry(base.into()).or_default();
        *last = (*last).max(suffix);
    }
    let community = Community {
        community_id: *community_id,
        slug: slug.clone(),
        name: name.clone(),
        owner: owner.clone(),
        plan: plan.clone(),
        created_at: at,
        position,
    };
    let previous = tenant.communities.insert(slug.clone(), Arc::new(community));
    assert!(previous.is_none(), "slugs are unique");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_transliterated_lowercased_dashed_trimmed_and_cut() {
        for (name, slug) in [
            ("My Community", "my-community"),
            ("  Café   Crème!! ", "cafe-creme"),
            ("Ünïcödé -- Straße", "unicode-strasse"),
            ("東京 Tokyo", "dong-jing-tokyo"),
            ("---", ""),
            ("¡¿ — !?", ""),
            ("a_b.c", "a-b-c"),
        ] {
            assert_eq!(base_slug(name), slug, "{name:?}");
        }
        let long = base_slug(&"word ".repeat(30));
        assert!(long.len() <= SLUG_CHARS_MAX && !long.ends_with('-'), "{long}");
    }
}
