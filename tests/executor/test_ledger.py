"""The judge is judged: the ledger sees every row it must and every kind of damage done behind its back.

No dualshift phase runs here. The writers write to the untouched fixture, then rows are lost,
changed and resurrected, and a privilege is granted, all by hand; each must be counted, exactly.
"""

from __future__ import annotations

import time

import psycopg

from . import ledger as lg
from .supabase_scenario import OLD_NAMES, copy_of, template_database


def test_the_ledger_counts_exactly_what_was_done_behind_its_back(admin_dsn: str) -> None:
    with (
        template_database(admin_dsn, 300) as template,
        copy_of(admin_dsn, template) as dsn,
        copy_of(admin_dsn, template, "supafix_ref") as ref_dsn,
    ):
        book = lg.Ledger()
        checker = lg.Checker(book)
        reference = lg.Replayer(ref_dsn, book)
        who = lg.viewers()
        with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
            checker.snapshot(conn)
            existed, before = lg.relations(conn), lg.privileges(conn)
            team = lg.Team(dsn, book, 300)
            team.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(
                w.table == "outcomes" and w.op == "delete" for w in book.writes
            ):
                time.sleep(0.1)
            with team.held():
                clean = checker.old_names(conn)
                reference.catch_up()
                same_counts = lg.count_differences(
                    lg.visible_counts(reference.conn, OLD_NAMES, who), lg.visible_counts(conn, OLD_NAMES, who)
                )
                # The damage: one seed tweet lost, one decision's status changed, one deleted snapshot back.
                deleted = next(w for w in book.writes if w.table == "outcomes" and w.op == "delete")
                conn.execute("DELETE FROM public.tweets WHERE tweet_id = 't7'")
                conn.execute(
                    "UPDATE public.content_metadata SET status = 'cancelled' WHERE decision_id = md5('c5')::uuid"
                )
                conn.execute(
                    "INSERT INTO public.outcomes (decision_id, tweet_id, collected_at) VALUES (md5('x')::uuid, %s, %s)",
                    (deleted.key["tweet_id"], deleted.key["collected_at"]),
                )
                conn.execute("GRANT SELECT ON public.tweet_metrics TO anon")
                damaged = checker.old_names(conn)
                gains = lg.gained(before, existed, lg.privileges(conn), {})
                expected = lg.visible_counts(reference.conn, OLD_NAMES, who)
                actual = lg.visible_counts(conn, OLD_NAMES, who)
                missing_new_tables = checker.new_tables(conn)
            crashes = team.finish()
            reference.close()
    assert not crashes and not book.failures, (crashes, book.failures[:3])
    assert {w.op for w in book.writes} == {"insert", "update", "delete"}
    assert all(f.clean for f in clean.values()), {k: f.as_dict() for k, f in clean.items() if not f.clean}
    assert same_counts == []
    assert (damaged["tweets"].lost, damaged["tweets"].wrong, damaged["tweets"].extra) == (1, 0, 0)
    assert (damaged["content_metadata"].lost, damaged["content_metadata"].wrong) == (0, 1)
    assert "status='cancelled' expected 'ready'" in damaged["content_metadata"].samples[0]
    assert (damaged["outcomes"].lost, damaged["outcomes"].wrong, damaged["outcomes"].extra) == (0, 0, 1)
    assert sum(lg.total({k: v}, "lost") for k, v in damaged.items() if k not in ("tweets",)) == 0
    assert gains == ["anon gained SELECT on public.tweet_metrics"]
    differing = {k for k, v in expected.items() if actual[k] != v}
    assert differing == {
        *(f"{viewer} tweets" for viewer in ("anon", "user0", "user3", "writer-user0", "service_role")),
        "service_role outcomes",  # the resurrected snapshot: only the service role may read outcomes
        "anon tweet_metrics",  # readable now, refused before
    }
    assert actual["anon tweets"] == expected["anon tweets"] - 1
    assert expected["anon tweet_metrics"] == "InsufficientPrivilege" and isinstance(actual["anon tweet_metrics"], int)
    assert all(f.unreadable and "UndefinedTable" in f.unreadable for f in missing_new_tables.values())
