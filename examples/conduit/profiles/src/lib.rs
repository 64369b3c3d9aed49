//! Conduit service `profiles`: users as others see them, and who follows
//! whom. It reads the public columns of `users` (its grant names no
//! other: the password hashes are out of its reach, whatever its SQL) and
//! owns `follows`. The other services show every author through
//! `profiles`, in one read per page.

sluice_guest::generate!("conduit:app/profiles-service", "../wit");

use exports::conduit::app::profiles::{Guest, Problem, Profile};
use sluice_guest::types::{Rows, Value};
use sluice_guest::{from, row, to};

const CHANNEL: &str = "main";
/// The most ids one `by-ids` call takes: a page of articles or comments.
const MAX_IDS: usize = 500;

struct Component;

impl Guest for Component {
    fn by_name(viewer: Option<i64>, username: String) -> Result<Profile, Problem> {
        Ok(find(viewer, &username)?.1)
    }

    fn by_ids(viewer: Option<i64>, ids: Vec<i64>) -> Result<Vec<(i64, Profile)>, Problem> {
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if ids.len() > MAX_IDS {
            return Err(Problem::Invalid(vec![format!("at most {MAX_IDS} profiles at once")]));
        }
        // One statement for the whole page: `?2, ?3, …` for the ids.
        let marks: Vec<String> = (0..ids.len()).map(|i| format!("?{}", i + 2)).collect();
        let sql = format!(
            "SELECT u.id, u.username, u.bio, u.image, \
             EXISTS (SELECT 1 FROM follows f WHERE f.follower = ?1 AND f.followed = u.id) AS following \
             FROM users u WHERE u.id IN ({})",
            marks.join(", ")
        );
        let mut params: Vec<Value> = vec![viewer.into()];
        params.extend(ids.iter().map(|&id| Value::Integer(id)));
        let rows = from::query(CHANNEL, &sql, &params).map_err(Problem::Store)?;
        Ok(rows.iter().filter_map(|r| Some((r.get("id")?, profile_of(&r)?))).collect())
    }

    fn follow(viewer: i64, username: String) -> Result<Profile, Problem> {
        let (id, mut profile) = find(Some(viewer), &username)?;
        if id == viewer {
            return Err(Problem::Invalid(vec!["you cannot follow yourself".into()]));
        }
        if !profile.following {
            to::insert(CHANNEL, "follows", &row(&[("follower", viewer.into()), ("followed", id.into())]))
                .map_err(Problem::Store)?;
            profile.following = true;
        }
        Ok(profile)
    }

    fn unfollow(viewer: i64, username: String) -> Result<Profile, Problem> {
        let (id, mut profile) = find(Some(viewer), &username)?;
        if profile.following {
            to::delete(CHANNEL, "follows", &row(&[("follower", viewer.into()), ("followed", id.into())]))
                .map_err(Problem::Store)?;
            profile.following = false;
        }
        Ok(profile)
    }
}

export!(Component);

/// The id and profile of `username`, as `viewer` sees it. The read is kept,
/// `following` included: a follow saved meanwhile by another scope makes
/// this one's save a conflict, and it runs again, so a follow is never
/// inserted twice.
fn find(viewer: Option<i64>, username: &str) -> Result<(i64, Profile), Problem> {
    let rows = from::query(
        CHANNEL,
        "SELECT u.id, u.username, u.bio, u.image, \
         EXISTS (SELECT 1 FROM follows f WHERE f.follower = ?1 AND f.followed = u.id) AS following \
         FROM users u WHERE u.username = ?2",
        &[viewer.into(), username.into()],
    )
    .map_err(Problem::Store)?;
    first(&rows).ok_or_else(|| Problem::NotFound(format!("no profile {username}")))
}

fn first(rows: &Rows) -> Option<(i64, Profile)> {
    let r = rows.iter().next()?;
    Some((r.get("id")?, profile_of(&r)?))
}

fn profile_of(r: &sluice_guest::RowRef<'_>) -> Option<Profile> {
    Some(Profile {
        username: r.get("username")?,
        bio: r.get("bio")?,
        image: r.get("image")?,
        following: r.get::<bool>("following")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_row_reads_following_as_a_boolean() {
        let rows = Rows {
            columns: ["id", "username", "bio", "image", "following"].map(String::from).to_vec(),
            values: vec![vec![
                Value::Integer(7),
                Value::Text("jake".into()),
                Value::Text(String::new()),
                Value::Text(String::new()),
                Value::Integer(1),
            ]],
        };
        let (id, profile) = first(&rows).expect("one profile");
        assert_eq!((id, profile.username.as_str(), profile.following), (7, "jake", true));
    }
}
