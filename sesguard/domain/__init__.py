"""The partner domain over the AWS edge: the one judgement, its transitions and reactions
(docs/design.md, "The partner judgement")."""
