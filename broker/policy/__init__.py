"""AWS's IAM policy language: documents, conditions, variables, and evaluation.

    document.py    JSON text → Policy (validated, compiled once, evaluated many times)
    matching.py    wildcard patterns for actions, resources and ARN components
    variables.py   ${aws:username}-style policy variables
    conditions.py  the Condition block: operators (operators/), qualifiers, IfExists
    context.py     the request context: condition keys and their values
    evaluate.py    which policy types apply and what they decide: Decision
"""
