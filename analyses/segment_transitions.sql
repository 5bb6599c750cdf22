{#- How users moved between segments: one row per (from, to) pair seen in the snapshot history.
    `dbt compile --select segment_transitions`, then run the SQL from target/compiled/. -#}
with

history as (
    select * from {{ ref('user_segments_history') }}
),

periods as (
    select
        user_id,
        segment,
        dbt_valid_from,
        lead(segment) over (partition by user_id order by dbt_valid_from) as next_segment
    from history
),

transitions as (
    select
        segment as from_segment,
        next_segment as to_segment,
        count(*) as user_count
    from periods
    where next_segment is not null
    group by segment, next_segment
)

select * from transitions
